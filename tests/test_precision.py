"""precision=auto (hardware.py): the choice on each machine kind, the loss and instruments in
fp32 under bf16, and the choice recorded in the run and kept by a resume."""
import os

import pytest
import torch
import yaml

from siamdyn.config import Config
from siamdyn.eval import extract_features
from siamdyn.hardware import choose_precision, cpu_bf16_units, resolve_precision
from siamdyn.methods import SiameseMethod
from siamdyn.train import train
from tests.conftest import TINY

CPU = torch.device("cpu")


def never_measured() -> float:
    raise AssertionError("a CPU without bf16 units must not spend time measuring")


@pytest.mark.parametrize("units, speedup, expected", [
    ([], never_measured, "fp32"),  # AVX2-only or AVX-512 without BF16: bf16 is emulated
    (["amx_bf16", "avx512_bf16"], lambda: 3.6, "bf16"),  # Sapphire Rapids and later
    (["avx512_bf16"], lambda: 1.8, "bf16"),  # Cooper Lake / Zen 4
    (["avx512_bf16"], lambda: 1.0, "fp32"),  # flags present, kernels not using them (an old oneDNN, a VM)
])
def test_auto_precision_on_each_cpu_kind(units, speedup, expected):
    choice = choose_precision(CPU, units=lambda: units, speedup=speedup)
    assert choice.precision == expected
    assert (units[0] if units else "no AMX / AVX-512 BF16") in choice.reason


def test_this_machines_units_agree_with_torchs_own_checks():
    units = cpu_bf16_units()
    assert set(units) <= {"amx_bf16", "avx512_bf16"}
    if hasattr(torch.cpu, "_is_avx512_bf16_supported"):
        assert ("avx512_bf16" in units) == torch.cpu._is_avx512_bf16_supported()


def test_explicit_precision_and_a_resumed_runs_precision_win_over_detection():
    def detect(device):
        raise AssertionError("not asked")
    cfg = Config.from_preset("simsiam", dict(TINY, precision="fp32"))
    assert resolve_precision(cfg, CPU, choose=detect)[0].precision == "fp32"
    auto = Config.from_preset("simsiam", dict(TINY, precision="auto"))
    saved = auto.replace(precision="bf16")
    resolved, choice = resolve_precision(auto, CPU, saved=saved, choose=detect)
    assert resolved.precision == "bf16" and "started with" in choice.reason


def test_the_loss_is_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = SiameseMethod(Config.from_preset("simsiam", TINY), 1)
    views = [torch.randn(16, 1, 16, 16), torch.randn(16, 1, 16, 16)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(views)
    assert out.p[0].dtype == torch.bfloat16  # the network did run in bf16
    assert out.loss.dtype == torch.float32
    # Not quantised to bf16's 2^-8 steps: the fp32 loss of the same bf16 outputs, to fp32 precision.
    expected = -torch.nn.functional.cosine_similarity(out.p[0].float(), out.targets[1].float()).mean()
    expected = (expected - torch.nn.functional.cosine_similarity(out.p[1].float(), out.targets[0].float()).mean()) / 2
    assert abs(out.loss.item() - expected.item()) < 1e-6


def test_a_float64_model_keeps_its_loss_in_float64():
    # The float64 reference of bench/precision_parity.py must be float64 end to end.
    torch.manual_seed(0)
    model = SiameseMethod(Config.from_preset("simsiam", TINY), 1).double()
    out = model([torch.randn(16, 1, 16, 16, dtype=torch.float64) for _ in range(2)])
    assert out.loss.dtype == torch.float64


def test_bf16_features_are_fp32_and_close_to_fp32_features():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten())
    images = torch.randint(0, 256, (64, 1, 12, 12), dtype=torch.uint8)
    prepare = lambda x: x.float() / 255  # noqa: E731
    a = extract_features(net, images, prepare)
    b = extract_features(net, images, prepare, bf16=True)
    assert b.dtype == torch.float32 and not torch.equal(a, b)  # bf16 really ran
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.999


def test_a_run_records_the_resolved_precision_and_why(tmp_path):
    out = str(tmp_path / "run")
    train(Config.from_preset("simsiam", dict(TINY, max_steps=2, precision="auto", device="cpu")), out, progress=False)
    doc = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    assert doc["config"]["precision"] in ("fp32", "bf16")
    if not cpu_bf16_units():  # no bf16 units: fp32, for that reason; with units the reason names the measurement
        assert doc["config"]["precision"] == "fp32" and "no AMX" in doc["resolved"]["precision"]
    else:
        assert "measured" in doc["resolved"]["precision"]


def test_a_run_records_the_kernel_settings_and_a_dirty_checkout(tmp_path, monkeypatch):
    import subprocess

    from siamdyn.runs import git_commit, write_config
    for k in ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # what makes a run's rounding that of another machine
    write_config(str(tmp_path), Config())
    with open(tmp_path / "config.yaml") as f:
        versions = yaml.safe_load(f)["versions"]
    assert versions["kernel_env"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert versions["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = git_commit(str(repo))
    assert clean != "unknown" and not clean.endswith("-dirty")
    (repo / "code.py").write_text("x = 2\n")  # a run from an edited tree must not pass for the commit
    assert git_commit(str(repo)) == clean + "-dirty"
