#!/usr/bin/env bash
# One idempotent setup: the Fashion-MNIST Debian package, .venv with torch==2.13.0 (CPU
# wheel), and siamdyn with its test extras. Safe to run again; fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR="${SIAMDYN_DATA:-/usr/share/datasets/fashion-mnist}"
if [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "setup: installing the Debian package dataset-fashion-mnist" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: Fashion-MNIST is missing from $DATA_DIR. Install it with" >&2
    echo "       sudo apt-get install dataset-fashion-mnist   (or set SIAMDYN_DATA to a folder with the four .gz files)" >&2
    exit 1
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.siamdyn-installed
WANT="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  # torch first, at the version constraints.txt pins: a bare `torch` would pull a multi-GB
  # CUDA build. pip takes the CPU wheel where the machine offers one, else the registry's build.
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt torch 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
  PIN="$(sed -n 's/^torch==//p' constraints.txt)"
  .venv/bin/python -c "import sys, torch, siamdyn; sys.exit(0 if torch.__version__.startswith('$PIN') else f'setup: torch {torch.__version__} is not the pinned $PIN')"
  echo "$WANT" > "$STAMP"
fi
.venv/bin/python -c "import torch, siamdyn; print(f'setup: siamdyn {siamdyn.__version__}, torch {torch.__version__}', '(CUDA build, runs on CPU too)' if torch.version.cuda else '(CPU build)')" >&2
