"""How many steps a network needs to segment each label of fixed brain MRI training patches.

An architecture-only probe, without medattn's data pipeline or a clock: 24 patches of 64^3 at 2.25 mm
are cut once from 3 sample training cases (lesion-centred 3 times in 6), then the network trains on
random pairs of them (with flips) by Dice + cross-entropy with deep supervision and AdamW 1e-3, as
`medattn train` does. Every `--every` steps it prints Dice per label on 6 of those patches. It asks
whether the network can learn a rare class at all in a few hundred steps, in a minute or two per run,
where `bench/equal_time.py` answers the full question in ten.

    .venv/bin/python bench/fit_probe.py --model agunet --option act=relu --steps 200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from options import model_option  # bench/ is on sys.path
from plain_monai import mr_preprocessing, nnunet_items

from medattn.losses import DeepSupervisionLoss, create_loss
from medattn.metrics.overlap import dice
from medattn.models import create
from medattn.models.registry import network_defaults

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "brain_mri"
LABELS = ("grey_matter", "white_matter", "lesion")


def training_patches(count_per_case: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of 64^3 patches at 2.25 mm from the first 3 training cases; lesion-heavy sampling."""
    from monai.transforms import Compose, RandCropByLabelClassesd

    keys = ["image", "label"]
    preprocess = Compose(mr_preprocessing(keys, [2.25] * 3))
    crop = RandCropByLabelClassesd(
        keys, "label", spatial_size=(64,) * 3, ratios=[1, 1, 1, 3], num_classes=4, num_samples=count_per_case
    )
    crop.set_random_state(seed)
    images, labels = [], []
    for item in nnunet_items(SAMPLES)[:3]:
        for patch in crop(preprocess(item)):
            images.append(patch["image"].as_tensor())
            labels.append(patch["label"].as_tensor())
    return torch.stack(images), torch.stack(labels)


def label_dice(prediction: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """medattn's Dice of every foreground label over all patches together."""
    return [dice((prediction == v).numpy(), (reference == v).numpy()) for v in range(1, len(LABELS) + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="agunet")
    parser.add_argument(
        "--option", type=model_option, action="append", default=[], help="model option KEY=VALUE"
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=25, help="steps between scores")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images, labels = training_patches()
    probe_images, probe_labels = images[::4], labels[::4]
    options = {**network_defaults(args.model, "cpu"), **dict(args.option)}
    torch.manual_seed(args.seed)
    network = create(args.model, 3, 1, len(LABELS) + 1, **options)
    loss_fn = DeepSupervisionLoss(create_loss("dice_ce", num_classes=len(LABELS) + 1))
    optimizer = torch.optim.AdamW(network.parameters(), 1e-3, weight_decay=3e-5)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"{args.model} {options}")
    print("| step | seconds | loss | " + " | ".join(LABELS) + " |")
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        network.train()
        pick = torch.randint(0, len(images), (2,), generator=generator)
        x, y = images[pick], labels[pick]
        if torch.rand((), generator=generator) < 0.5:
            x, y = x.flip(2), y.flip(2)
        optimizer.zero_grad()
        loss = loss_fn(network(x), y)
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            network.eval()
            with torch.no_grad():
                prediction = torch.cat([network(probe_images[i : i + 2]).argmax(1) for i in range(0, 6, 2)])
            scores = label_dice(prediction, probe_labels[:, 0])
            print(
                f"| {step} | {time.perf_counter() - start:.0f} | {loss.item():.3f} | "
                + " | ".join(f"{s:.3f}" for s in scores)
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
