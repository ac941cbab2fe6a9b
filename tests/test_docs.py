"""The repo explains itself: docs embed only images that exist, cite only files inside the
repo, `--help-config` describes every field, and the code passes ruff's lint rules."""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from siamdyn.cli import main
from siamdyn.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)) + [os.path.join(ROOT, "README.md")]
SOURCES = sorted(glob.glob(os.path.join(ROOT, d, "**", "*.py"), recursive=True) for d in ("src", "bench", "examples"))
OUTSIDE = re.compile(r"SEED_NOTES|DESIGN\.md|\.\./shared|\bissue \d+|\(issue|SEED §")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_embedded_image_exists(doc):
    text = open(doc, encoding="utf-8").read()
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    missing = [p for p in images if not p.startswith("http") and
               not os.path.exists(os.path.join(os.path.dirname(doc), p))]
    assert not missing, f"{os.path.relpath(doc, ROOT)} embeds images that are not in the repo: {missing}"


def test_docs_and_code_cite_nothing_outside_the_repo():
    files = DOCS + [p for group in SOURCES for p in group]
    bad = [f"{os.path.relpath(f, ROOT)}:{i}: {line.strip()[:80]}"
           for f in files for i, line in enumerate(open(f, encoding="utf-8"), 1) if OUTSIDE.search(line)]
    assert not bad, "references to files outside the repo or to issue numbers:\n" + "\n".join(bad)


def test_seed_sections_and_equations_cited_by_the_code_exist():
    seed = open(os.path.join(ROOT, "docs", "seed.md"), encoding="utf-8").read()
    design = open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8").read()
    cited = set()
    for group in SOURCES:
        for f in group:
            text = open(f, encoding="utf-8").read()
            cited |= {("seed", n) for n in re.findall(r"docs/seed\.md §(\d+)", text)}
            cited |= {("design", n) for n in re.findall(r"docs/design\.md §(\d+)", text)}
            cited |= {("eq", n) for n in re.findall(r"eqs?\. \((\d+)\)", text)}
    for kind, n in sorted(cited):
        if kind == "seed":
            assert f"## §{n}." in seed, f"docs/seed.md has no §{n}"
        elif kind == "design":
            assert f"\n## {n}. " in design, f"docs/design.md has no §{n}"
        else:
            assert f"({n})" in seed, f"docs/seed.md has no eq. ({n})"


def test_help_config_describes_every_field(capsys):
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    for name, f in Config.__dataclass_fields__.items():
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [name]), None)
        assert line and f.metadata["help"] in line, name


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (bash scripts/setup.sh installs it)")
    done = subprocess.run([ruff, "check", ROOT], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
