"""`medattn demo`: segment the bundled brain MRI and endoscopy samples with the bundled model packages.

Writes, under the output folder: brain_mri/ (NIfTI masks, volumes.csv, predict.json, slicer/*.seg.nrrd,
evaluation/ against the bundled reference labels), endoscopy/ (label PNGs, overlays/), and montage.png.
The packages in sample_data/models/ are trained by bench/train_demo_models.py on the sample data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from medattn.errors import InputNotFoundError
from medattn.io import load_image, save_mask

REPO_SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
TILE = 256


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and the Dice of the brain cases against their reference labels."""

    out: Path
    montage: Path
    brain_dice: dict[str, float] = field(default_factory=dict)
    volumes_csv: list[Path] = field(default_factory=list)
    cases: int = 0


def find_samples(samples: str | Path | None = None) -> Path:
    """The sample_data folder: the given one, the repository's, or ./sample_data."""
    for candidate in (samples, REPO_SAMPLES, Path("sample_data")):
        if candidate is not None and (Path(candidate) / "models").is_dir():
            return Path(candidate)
    raise InputNotFoundError("no sample_data folder with models/ found; pass --samples PATH", samples or ".")


def _overlay_slice(
    image: np.ndarray, mask: np.ndarray, colors: dict[int, tuple[int, int, int]]
) -> Image.Image:
    """A grey slice with each label blended in its colour (rows-first for PIL)."""
    low, high = np.percentile(image, [1, 99])
    grey = np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for value, color in colors.items():
        where = mask == value
        rgb[where] = 0.55 * rgb[where] + 0.45 * np.asarray(color, dtype=np.float64)
    return Image.fromarray(rgb.astype(np.uint8))


def _brain_tiles(images: list[Path], masks: list[Path], colors: dict) -> list[Image.Image]:
    tiles = []
    for image_path, mask_path in zip(images, masks, strict=True):
        from monai.transforms import Orientation

        image = Orientation("RAS")(load_image(image_path))[0].numpy()
        mask = Orientation("RAS")(load_image(mask_path, dtype=None))[0].numpy()
        k = (
            int(np.argmax((mask == max(colors)).sum(axis=(0, 1))))
            if (mask == max(colors)).any()
            else mask.shape[2] // 2
        )
        # axial slice, anterior up, patient's right on the left of the screen (radiological view)
        tiles.append(_overlay_slice(np.rot90(image[:, :, k]), np.rot90(mask[:, :, k]), colors))
    return tiles


def _montage(tiles: list[Image.Image], path: Path) -> Path:
    columns = min(4, len(tiles))
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * TILE, rows * TILE), (0, 0, 0))
    for index, tile in enumerate(tiles):
        scale = TILE / max(tile.size)  # small brain slices are enlarged, large frames shrunk
        tile = tile.resize(
            (max(1, round(tile.width * scale)), max(1, round(tile.height * scale))), Image.NEAREST
        )
        x, y = (index % columns) * TILE, (index // columns) * TILE
        sheet.paste(tile, (x + (TILE - tile.width) // 2, y + (TILE - tile.height) // 2))
    from medattn.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        sheet.save(tmp)
    return path


def _colors(config) -> dict[int, tuple[int, int, int]]:
    """The colours save_mask gives each label, so the montage matches what Slicer shows."""
    from medattn.io.label_table import label_table

    entries = label_table(config.label_table(), range(1, config.plan.num_classes))
    return {entry.value: tuple(entry.color) for entry in entries}


def run_demo(
    out: str | Path = "demo_output", samples: str | Path | None = None, device: str = "auto"
) -> DemoResult:
    """Predict the bundled samples, write Slicer files, a Dice check, volumes and a montage."""
    from medattn.package import read_config
    from medattn.pipelines.evaluate import evaluate
    from medattn.pipelines.predict import predict

    samples, out = find_samples(samples), Path(out)
    result = DemoResult(out=out, montage=out / "montage.png")
    brain_model, endo_model = samples / "models" / "brain_mri", samples / "models" / "endoscopy"
    brain_out = out / "brain_mri"
    brain = predict(samples / "brain_mri" / "imagesTs", brain_out, brain_model, device=device, overwrite=True)
    config = read_config(brain_model)
    colors = _colors(config)
    done = [r for r in brain if r.output]
    test_images = {r.case: next((samples / "brain_mri" / "imagesTs").glob(f"{r.case}_0000.*")) for r in done}
    for case in done:
        image = test_images[case.case]
        mask = load_image(case.output, dtype=None)
        save_mask(
            mask,
            brain_out / "slicer" / f"{case.case}.seg.nrrd",
            reference=load_image(image),
            labels=config.label_table(),
        )
    evaluation = evaluate(brain_out, samples / "brain_mri" / "labelsTs", out=brain_out / "evaluation")
    for row in evaluation.metrics:
        result.brain_dice[f"{row.case}/{config.labels.get(row.label, row.label)}"] = float(row.dice)
    endo_out = out / "endoscopy"
    endo = predict(
        samples / "endoscopy" / "images", endo_out, endo_model, format="png", device=device, overwrite=True
    )
    endo_config = read_config(endo_model)
    tiles = _brain_tiles(
        [test_images[r.case] for r in done],
        [Path(r.output) for r in done],
        colors,
    )
    for case in (r for r in endo if r.output):
        image = load_image(samples / "endoscopy" / "images" / f"{case.case}.png")
        overlay = endo_out / "overlays" / f"{case.case}.png"
        save_mask(
            load_image(case.output, dtype=None),
            overlay,
            reference=image,
            labels=endo_config.label_table(),
            overlay=True,
        )
        tiles.append(Image.open(overlay).convert("RGB"))
    _montage(tiles, result.montage)
    result.volumes_csv = [brain_out / "volumes.csv", endo_out / "volumes.csv"]
    result.cases = len(brain) + len(endo)
    return result
