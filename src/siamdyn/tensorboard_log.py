"""An optional TensorBoard mirror of metrics.jsonl (`--set tensorboard=true`), the view that
lightly and solo-learn users look at. metrics.jsonl stays the record; the event files in
OUT/tensorboard hold the same numbers, one scalar per numeric field and step, written by
`siamdyn.loggers.TensorBoardLogger` (the same logger the instruments use outside `siamdyn train`)."""
from __future__ import annotations

import importlib.util

from siamdyn.errors import ConfigError

TENSORBOARD_DIR = "tensorboard"


def check_tensorboard_installed() -> None:
    """Fail before the run starts, not at its first metric line (a broken install too)."""
    fix = "pip install 'siamdyn[tensorboard]' (or drop --set tensorboard=true; metrics.jsonl holds the same numbers)"
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"tensorboard=true needs the tensorboard package: {fix}")
    try:
        import torch.utils.tensorboard  # noqa: F401
    except Exception as e:  # noqa: BLE001 — a protobuf mismatch, say: any failure means no sink
        raise ConfigError(f"tensorboard=true, but it does not import ({type(e).__name__}: {str(e)[:120]}); {fix}") \
            from None
