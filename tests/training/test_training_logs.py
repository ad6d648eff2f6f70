"""metrics.csv: fixed columns first, then metrics as they appear; rewritten whole, so no stale rows."""

from __future__ import annotations

import csv

import pytest

from medattn.training import MetricsLogger


def _read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_columns_and_rewrite(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=False)
    history = [{"epoch": 1, "step": 5, "train_loss": 0.9, "lr": 0.01, "seconds": 1.5}]
    logger.write(history)
    history.append({**history[0], "epoch": 2, "step": 10, "val_dice": 0.5, "lesion_recall_<1ml": 0.25})
    path = logger.write(history)
    rows = _read(path)
    assert list(rows[0]) == ["epoch", "step", "train_loss", "lr", "seconds", "val_dice", "lesion_recall_<1ml"]
    assert [r["val_dice"] for r in rows] == ["", "0.5"]
    logger.write(history[:1])  # a resumed run's history replaces the file
    assert [r["epoch"] for r in _read(path)] == ["1"]
    logger.close()


def test_tensorboard_gets_the_newest_rows_finite_numbers_at_its_epoch(tmp_path, monkeypatch):
    """What reaches TensorBoard, recorded by a stand-in writer (tensorboard is an optional extra)."""
    from medattn.training import logging

    class Recorder:
        def __init__(self):
            self.scalars, self.closed = [], False

        def add_scalar(self, key, value, global_step):
            self.scalars.append((key, value, global_step))

        def flush(self):
            pass

        def close(self):
            self.closed = True

    recorder = Recorder()
    monkeypatch.setattr(logging, "_open_tensorboard", lambda log_dir, purge_step: recorder)
    logger = MetricsLogger(tmp_path)
    first = {"epoch": 1, "step": 5, "train_loss": 0.9, "lr": 0.01, "seconds": 1.5}
    logger.write([first])
    logger.write([first, {**first, "epoch": 2, "step": 10, "val_dice": float("nan"), "note": "text"}])
    logger.close()
    assert recorder.scalars == [
        ("step", 5, 1),
        ("train_loss", 0.9, 1),
        ("lr", 0.01, 1),
        ("seconds", 1.5, 1),
        ("step", 10, 2),
        ("train_loss", 0.9, 2),
        ("lr", 0.01, 2),
        ("seconds", 1.5, 2),
    ]
    assert recorder.closed


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    logger = MetricsLogger(tmp_path)
    logger.write([{"epoch": 1, "step": 5, "train_loss": 0.9, "lr": 0.01, "seconds": 1.5, "val_dice": 0.4}])
    logger.close()
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
