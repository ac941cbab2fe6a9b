"""bench/speed_lockstep.py at toy sizes: the variants take turns and the ratios come from the turns."""
from __future__ import annotations

import io
import re
import select
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--dataset", "cifar-shaped", "--limit", "600", "--width", "4", "--batch", "32", "--warmup", "1"]


def lockstep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/speed_lockstep.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_lockstep_paces_every_variant_and_its_ratios_match_the_table(tmp_path):
    out = tmp_path / "lockstep.md"
    done = lockstep("--variants", "typical,siamdyn-default", "--steps", "4", "--block", "2", *TOY, "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "timed turns: typical 4, siamdyn-default 4" in text
    means = {m[1]: float(m[2]) for m in re.finditer(r"^\| (\S+) \| [^|]+ \| ([\d.]+) \|", text, re.M)}
    ratio = float(re.search(r"siamdyn-default vs typical: ([\d.]+)×", text)[1])
    # the table rounds its means to 3 decimals and the ratio to 2
    slow, fast = means["typical"], means["siamdyn-default"]
    assert (slow - 5e-4) / (fast + 5e-4) - 5e-3 <= ratio <= (slow + 5e-4) / (fast - 5e-4) + 5e-3


def test_a_paced_child_waits_for_its_turn():
    """The real training loop (siamdyn's logger hook) stops after a step until the parent says GO."""
    cmd = [sys.executable, "bench/speed.py", "--child", "siamdyn-default", "--lockstep", "--steps", "3", *TOY]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("TICK")
        assert select.select([proc.stdout], [], [], 3.0)[0] == []  # no second step without a GO
        proc.stdin.write("GO\n")
        proc.stdin.flush()
        assert select.select([proc.stdout], [], [], 60)[0] and proc.stdout.readline().startswith("TICK")
        out, _ = proc.communicate("END\n", timeout=120)  # END: the rest runs unpaced
    finally:
        proc.kill()
    assert proc.returncode == 0 and "RESULT " in out and "TICK" not in out


def test_pacer_reads_one_line_per_step_and_stops_at_anything_but_go(monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    from speed import Pacer
    monkeypatch.setattr(sys, "stdin", io.StringIO("GO\nEND\nGO\n"))
    pace = Pacer()
    pace({"loss": 0.1}, 0)  # a line without time_s (a probe's, a kNN's) is no step
    pace({"time_s": 1.0}, 1)
    assert pace.on and sys.stdin.tell() == 3
    pace({"time_s": 2.0}, 2)
    assert not pace.on
    pace.turn(3)
    assert capsys.readouterr().out == "TICK 1\nTICK 2\n" and sys.stdin.read() == "GO\n"


def test_lockstep_refuses_what_it_cannot_pace():
    for extra, message in ((["--variants", "typical,siamdyn-log10"], "cannot be paced"),
                           (["--workers", "2"], "lockstep is for CPU"), (["--device", "cuda"], "lockstep is for CPU"),
                           (["--steps", "5", "--block", "10"], "shorter than one block")):
        done = lockstep(*extra)
        assert done.returncode != 0 and message in done.stderr, (extra, done.stderr[-500:])
