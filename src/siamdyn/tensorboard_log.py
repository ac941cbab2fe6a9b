"""An optional TensorBoard mirror of metrics.jsonl (`--set tensorboard=true`), the view that
lightly and solo-learn users look at. metrics.jsonl stays the record; the event files in
OUT/tensorboard hold the same numbers, one scalar per numeric field and step."""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Iterator

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


def scalars(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """(tag, value) for every number in a metrics line; nested dicts give 'outer/inner' tags."""
    for key, value in record.items():
        if key == "step" and not prefix:
            continue
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from scalars(value, f"{tag}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield tag, float(value)


class TensorBoardLog:
    """Wraps a MetricsLog: every line is written to it and mirrored into TensorBoard.
    `resume_step`: on a resume, events after it from an earlier session are purged (TensorBoard's
    purge_step), as truncate_metrics drops the lines a killed run wrote past its checkpoint."""

    def __init__(self, metrics: Any, out: str, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter
        self.metrics = metrics
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(os.path.join(out, TENSORBOARD_DIR), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        self.metrics.write(record)
        step = int(record.get("step", 0))
        for tag, value in scalars(record):
            self.writer.add_scalar(tag, value, step)

    def sync(self) -> None:
        self.metrics.sync()
        self.writer.flush()

    def close(self) -> None:
        self.metrics.close()
        self.writer.close()
