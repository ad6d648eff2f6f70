"""Train the small model packages `medattn demo` uses, on the bundled sample data, and copy them into
sample_data/models/. Seeded; a few minutes on a laptop CPU.

    .venv/bin/python bench/train_demo_models.py [--max-time 300]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import medattn

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
MODELS = {
    # name: (data folder, training options); small widths keep packages ~1 MB and inference fast on CPU
    "brain_mri": (
        "brain_mri",
        {
            "model": "agunet",
            "model_kwargs": {"base_channels": 8, "depth": 3, "max_channels": 64},
            "epochs": 80,
            "steps_per_epoch": 6,
            "patch": [48, 48, 48],
            "spacing": [3.0, 3.0, 3.0],
            "batch": 2,
            "lr": 3e-3,
        },
    ),
    "endoscopy": (
        "endoscopy",
        {
            "model": "agunet",
            "model_kwargs": {"base_channels": 8, "depth": 3, "max_channels": 64},
            "epochs": 60,
            "steps_per_epoch": 4,
            "patch": [256, 256],
            "batch": 2,
            "lr": 3e-3,
        },
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-time", type=float, default=None, help="seconds per model (default: all epochs)"
    )
    parser.add_argument("--brain-max-time", type=float, default=None, help="seconds for the brain model")
    parser.add_argument("--only", choices=sorted(MODELS), help="train one model")
    args = parser.parse_args()
    for name, (folder, options) in MODELS.items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory() as run:
            result = medattn.train(
                SAMPLES / folder,
                out=run,
                device="cpu",
                max_time=args.brain_max_time
                if name == "brain_mri" and args.brain_max_time
                else args.max_time,
                seed=0,
                val_fraction=0.2,
                **options,
            )
            target = SAMPLES / "models" / name
            target.mkdir(parents=True, exist_ok=True)
            for file in ("model.pt", "medattn.json"):
                shutil.copy2(Path(run) / file, target / file)
            print(f"{name}: best val Dice {result.best_metric}, {result.epochs} epochs -> {target}")


if __name__ == "__main__":
    main()
