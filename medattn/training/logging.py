"""Per-epoch training logs: ``metrics.csv`` always, TensorBoard events when tensorboard is installed."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medattn.io.atomic import atomic_path

#: Columns that come first, in this order; validation metrics follow in the order they first appear.
FIXED_COLUMNS = ("epoch", "step", "train_loss", "lr", "seconds")


def _open_tensorboard(log_dir: Path, purge_step: int | None) -> Any:
    """A SummaryWriter, or None when `torch.utils.tensorboard` cannot be imported (no tensorboard)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class MetricsLogger:
    """Writes the epoch history of a run into `out_dir`.

    ``metrics.csv`` is rewritten whole (atomically) from the history after every epoch. The history travels
    in the checkpoint, so after a kill and resume the file holds exactly the epochs of the resumed run,
    never rows of an epoch that was lost. TensorBoard scalars go to ``out_dir/tensorboard`` with the epoch
    as the step; `purge_step` drops events a killed run logged after its last checkpoint.

    Args:
        out_dir: the run folder.
        tensorboard: also write TensorBoard events when the package is available.
        purge_step: first epoch this process will log (for TensorBoard's purge on resume).
    """

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, purge_step: int | None = None):
        self.out_dir = Path(out_dir)
        self.csv_path = self.out_dir / "metrics.csv"
        self.writer = _open_tensorboard(self.out_dir / "tensorboard", purge_step) if tensorboard else None

    def write(self, history: Sequence[dict[str, Any]]) -> Path:
        """Rewrite ``metrics.csv`` from the whole history and log the newest row to TensorBoard."""
        columns = list(FIXED_COLUMNS)
        for row in history:
            columns.extend(key for key in row if key not in columns)
        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(history)
        if self.writer is not None and history:
            row = history[-1]
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, global_step=int(row["epoch"]))
            self.writer.flush()
        return self.csv_path

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
