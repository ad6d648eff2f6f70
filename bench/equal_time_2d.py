"""Accuracy at equal wall time on endoscopy frames: `medattn train` on a folder of frames against a plain
MONAI 2D UNet loop, several frame sets and seeds, each test side seen through another endoscope.

Frames come from the sample-data generator (sample_data/gen_endoscopy.py: rendered colon wall, one polyp per
frame, 192 x 192); each frame set has its own scenes and its own test-side shift, drawn before any run:

- ``endo_colour``: another colour balance and exposure (channel gains 0.8-1.25, overall 0.85-1.15), light
  sensor noise (sigma 2 grey levels);
- ``endo_soft``: a softer, noisier sensor (gaussian blur sigma 1 px, noise sigma 6, gains 0.9-1.1);
- ``endo_lowres``: a lower-resolution endoscope whose frames are stored as JPEG (half resolution scaled
  back up, JPEG quality 35-55, gains 0.9-1.1).

Arms: ``plain`` is MONAI's 2D tutorial recipe (UNet 16-256 with residual units and batch norm, DiceCE,
Adam 1e-3, batch 8, per-image scaling to [0, 1], flips and 90-degree rotations, no validation);
``medattn`` is `medattn.train` on the folder with its defaults (no ``--model``: what a user gets) then
`medattn.predict --format png`; ``pranet`` is the same with ``model="pranet"`` (random backbone). A variant
is ``--arm medattn --name NAME --set KEY JSON`` (TrainOptions fields). Scores per run: Dice (mean over
test frames), frames detected (Dice > 0.5) and false-positive components (predicted regions touching no
polyp) per frame, with their areas. Choices are tuned on ``--data-seed 1000`` and reported on 1.

    .venv/bin/python bench/equal_time_2d.py protocol --seconds 120 --seeds 0 1 2
    .venv/bin/python bench/equal_time_2d.py run --dataset endo_soft --arm pranet --data-seed 1000
    .venv/bin/python bench/equal_time_2d.py report --data-seed 1
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from plain_monai import train_until  # bench/plain_monai.py
from protocol import dispatch, protocol_parser, spread, write_result  # bench/protocol.py
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench_results" / "equal_time_2d"
FRAMES = ROOT / "bench_results" / "frames"
sys.path.insert(0, str(ROOT / "sample_data"))
from gen_endoscopy import write_frames  # noqa: E402  (sample-data generator, not a package)

TRAIN_FRAMES, TEST_FRAMES, SIZE = 48, 24, 192
FP_REPORT_PX = 37  # 0.1 % of a frame: false positives this large are regions a reader would look at
FRAME_SETS = ("endo_colour", "endo_soft", "endo_lowres")


def shift_frame(rgb: np.ndarray, frame_set: str, rng: np.random.Generator) -> np.ndarray:
    """One test frame as the frame set's other endoscope would show it (uint8 RGB in, uint8 RGB out)."""
    image = rgb.astype(np.float32)
    if frame_set == "endo_colour":
        image *= rng.uniform(0.8, 1.25, size=3) * rng.uniform(0.85, 1.15)
        image += rng.normal(0, 2, image.shape)
    elif frame_set == "endo_soft":
        image = ndimage.gaussian_filter(image * rng.uniform(0.9, 1.1, size=3), sigma=(1.0, 1.0, 0))
        image += rng.normal(0, 6, image.shape)
    elif frame_set == "endo_lowres":
        image *= rng.uniform(0.9, 1.1, size=3)
        small = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).resize((SIZE // 2, SIZE // 2))
        buffer = io.BytesIO()
        small.resize((SIZE, SIZE), Image.BILINEAR).save(buffer, "JPEG", quality=int(rng.integers(35, 56)))
        image = np.asarray(Image.open(buffer), dtype=np.float32)
    else:
        raise ValueError(f"unknown frame set {frame_set!r}; known: {', '.join(FRAME_SETS)}")
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def ensure_frames(frame_set: str, data_seed: int) -> Path:
    """The frame set's train/ and test/ folders (images/, labels/ of 0/1 PNGs), written once per data seed.

    Scenes differ between frame sets and data seeds; the test side is shifted by `shift_frame`.
    """
    root = FRAMES / f"{frame_set}_s{data_seed}"
    if (root / "done").is_file():
        return root
    base = data_seed * 100 + 10 * FRAME_SETS.index(frame_set)
    write_frames(root / "train", TRAIN_FRAMES, SIZE, seed=base + 1)
    write_frames(root / "test", TEST_FRAMES, SIZE, seed=base + 2)
    rng = np.random.default_rng(base + 3)
    for path in sorted((root / "test" / "images").glob("*.png")):
        shifted = shift_frame(np.asarray(Image.open(path).convert("RGB")), frame_set, rng)
        Image.fromarray(shifted).save(path)
    (root / "done").write_text("")
    return root


def plain_monai(train_dir: Path, test_dir: Path, out: Path, seconds: float, seed: int) -> int:
    """MONAI's 2D tutorial recipe for `seconds`, then the test frames; returns the steps done."""
    from monai.data import DataLoader, Dataset
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        RandFlipd,
        RandRotate90d,
        ScaleIntensityd,
    )
    from monai.utils import set_determinism

    set_determinism(seed)
    items = [
        {"image": str(p), "label": str(train_dir / "labels" / p.name)}
        for p in sorted((train_dir / "images").glob("*.png"))
    ]
    keys = ["image", "label"]
    transform = Compose(
        [
            LoadImaged(keys),
            EnsureChannelFirstd(keys),
            ScaleIntensityd("image"),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandRotate90d(keys, prob=0.5),
        ]
    )
    loader = DataLoader(Dataset(items, transform), batch_size=8, shuffle=True)
    net = UNet(2, 3, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    steps = len(train_until(net, loss_fn, optimizer, loader, lambda _, elapsed: elapsed >= seconds))
    net.eval()
    read = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), ScaleIntensityd("image")])
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((test_dir / "images").glob("*.png")):
        image = read({"image": str(path)})["image"]
        with torch.no_grad():
            logits = sliding_window_inference(image[None], (SIZE, SIZE), 1, net)[0]
        labels = logits.argmax(0).numpy().astype(np.uint8)  # (W, H), PILReader's layout
        Image.fromarray(labels.T).save(out / path.name)
    return steps


def medattn_arm(train_dir: Path, test_dir: Path, out: Path, seconds: float, seed: int, options: dict) -> int:
    """`medattn.train` on the folder (defaults plus `options`), then `medattn.predict --format png`."""
    import medattn

    with tempfile.TemporaryDirectory() as work:
        run = medattn.train(
            train_dir, out=Path(work) / "run", device="cpu", max_time=seconds, seed=seed, **options
        )
        medattn.predict(test_dir / "images", out, model=run.package, device="cpu", format="png")
    return run.history[-1]["step"] if run.history else 0


def score(pred_dir: Path, test_dir: Path) -> dict[str, float]:
    """Mean Dice over frames, share of frames with Dice > 0.5, false-positive components per frame."""
    dices, false_positives, fp_areas = [], [], []
    for ref_path in sorted((test_dir / "labels").glob("*.png")):
        ref = np.asarray(Image.open(ref_path)) > 0
        pred = np.asarray(Image.open(pred_dir / ref_path.name)) > 0
        total = ref.sum() + pred.sum()
        dices.append(2 * (ref & pred).sum() / total if total else 1.0)
        components, count = ndimage.label(pred)
        untouched = sorted(set(range(1, count + 1)) - set(np.unique(components[ref])))
        false_positives.append(len(untouched))
        fp_areas += np.bincount(components.ravel(), minlength=count + 1)[untouched].tolist()
    return {
        "dice": float(np.mean(dices)),
        "detected": float(np.mean(np.asarray(dices) > 0.5)),
        "fp_per_frame": float(np.mean(false_positives)),
        "fp_areas_px": fp_areas,  # how large the false positives are: specks or polyp-sized regions
    }


def run(args: argparse.Namespace) -> Path:
    """One arm on one frame set and seed; writes and returns its result JSON."""
    data = ensure_frames(args.dataset, args.data_seed)
    options = {key: json.loads(value) for key, value in args.set}
    if args.arm == "pranet":
        options = {"model": "pranet", **options}
    with tempfile.TemporaryDirectory() as work:
        pred = Path(work) / "pred"
        start = time.perf_counter()
        if args.arm == "plain":
            steps = plain_monai(data / "train", data / "test", pred, args.seconds, args.seed)
        else:
            steps = medattn_arm(data / "train", data / "test", pred, args.seconds, args.seed, options)
        measured = {"steps": steps, "wall_s": time.perf_counter() - start, **score(pred, data / "test")}
    return write_result(args, RESULTS, measured, ("steps", "dice", "detected", "fp_per_frame"))


def _large_fp_column(results: list[dict]) -> str:
    """False-positive components of at least FP_REPORT_PX pixels per test frame (specks left out); empty
    for runs scored before their areas were kept."""
    if not all("fp_areas_px" in r for r in results):
        return ""
    return spread([sum(a >= FP_REPORT_PX for a in r["fp_areas_px"]) / TEST_FRAMES for r in results])


def report(args: argparse.Namespace) -> str:
    """One markdown table over the frame sets: mean ± sd over seeds for each arm."""
    rows = [
        "| frame set | arm | seeds | steps | Dice | frames detected | FP components / frame "
        f"| of them >= {FP_REPORT_PX} px / frame |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for folder in sorted(RESULTS.glob(f"*_s{args.data_seed}")):
        runs: dict[str, list[dict]] = {}
        for path in sorted(folder.glob("*.json")):
            result = json.loads(path.read_text())
            runs.setdefault(result["arm"], []).append(result)
        for arm, results in sorted(runs.items(), key=lambda item: (item[0] != "plain", item[0])):
            rows.append(
                f"| {folder.name.rsplit('_s', 1)[0]} | {arm} | {len(results)} | "
                f"{np.mean([r['steps'] for r in results]):.0f} | "
                + " | ".join(spread([r[k] for r in results]) for k in ("dice", "detected", "fp_per_frame"))
                + f" | {_large_fp_column(results)} |"
            )
    text = "\n".join(rows)
    print(text)
    return text


def main() -> None:
    parser, one, summary = protocol_parser(
        __doc__.splitlines()[0], list(FRAME_SETS), ["plain", "medattn", "pranet"], 120.0
    )
    dispatch(parser.parse_args(), __file__, RESULTS, run, report)


if __name__ == "__main__":
    main()
