"""bench/speed_lockstep.py at toy sizes: the variants take turns and the ratios come from the turns."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_lockstep_paces_every_variant_and_its_ratios_match_the_table(tmp_path):
    out = tmp_path / "lockstep.md"
    done = subprocess.run([sys.executable, "bench/speed_lockstep.py", "--variants", "typical,siamdyn-default",
                           "--steps", "4", "--block", "2", "--warmup", "1", "--width", "4", "--batch", "32",
                           "--limit", "500", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "timed turns: typical 4, siamdyn-default 4" in text
    means = {m[1]: float(m[2]) for m in re.finditer(r"^\| (\S+) \| [^|]+ \| ([\d.]+) \|", text, re.M)}
    ratio = float(re.search(r"siamdyn-default vs typical: ([\d.]+)×", text)[1])
    # the table rounds its means to 3 decimals
    assert abs(ratio - means["typical"] / means["siamdyn-default"]) < 0.05 * ratio + 0.01


def test_lockstep_refuses_what_it_cannot_pace():
    for extra in (["--variants", "typical,siamdyn-log10"], ["--workers", "2"], ["--device", "cuda"]):
        done = subprocess.run([sys.executable, "bench/speed_lockstep.py", *extra], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode != 0 and ("cannot be paced" in done.stderr or "lockstep is for CPU" in done.stderr)
