"""Which test lesions a model finds, by how visible they are: lesion-wise recall per stratum of local
contrast-to-noise, from a folder of predicted probabilities.

A lesion's contrast-to-noise (CNR) is (mean intensity inside it - mean of a 2-voxel shell of grey and
white matter around it) / the shell's standard deviation, on the test image as written. For each reference
lesion the script takes the highest lesion probability inside it; a lesion is found at a threshold when
that maximum reaches it. A lesion missed at every threshold down to 0.1 was not seen at all: no
postprocessing or threshold brings it back, only a model that sees fainter lesions. Reads the
`<case>_probabilities.nii.gz` files `medattn predict --save-probabilities` writes (the input's grid,
classes last) and the dataset's `imagesTs`/`labelsTs` (bench/brain_datasets.py layout, lesion label 3); the
CNR range of the small lesions of the training cases beside that of the test cases closes the report.

    .venv/bin/python bench/lesion_visibility.py bench_results/datasets/mri_2mm_s1 \
        bench_results/uncertainty/mri_2mm_s1_3x400s_predictions/ensemble_of_3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

LESION = 3
CNR_STRATA = ((-np.inf, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, np.inf))
THRESHOLDS = (0.5, 0.3, 0.1)


def lesion_contrasts(labels: np.ndarray, image: np.ndarray):
    """(lesion mask, CNR) for every lesion of one case."""
    components, count = ndimage.label(labels == LESION)
    for number in range(1, count + 1):
        inside = components == number
        shell = ndimage.binary_dilation(inside, iterations=2) & ~inside & (labels > 0) & (labels < LESION)
        yield inside, float((image[inside].mean() - image[shell].mean()) / image[shell].std())


def _case(data: Path, subset: str, label_path: Path) -> tuple[str, np.ndarray, np.ndarray, float]:
    """(case id, labels, image, mL per voxel) of one case of `subset` ("Tr" or "Ts")."""
    case = label_path.name.removesuffix(".nii.gz")
    label_image = nib.load(label_path)
    image = np.asarray(nib.load(data / f"images{subset}" / f"{case}_0000.nii.gz").dataobj, np.float32)
    voxel_ml = float(np.prod(label_image.header.get_zooms()[:3])) / 1000.0
    return case, np.asarray(label_image.dataobj), image, voxel_ml


def lesion_rows(data: Path, predictions: Path) -> list[tuple[float, float, float]]:
    """(volume mL, CNR, highest lesion probability inside) for every reference test lesion."""
    rows = []
    for label_path in sorted((data / "labelsTs").glob("*.nii.gz")):
        case, labels, image, voxel_ml = _case(data, "Ts", label_path)
        probabilities = nib.load(predictions / f"{case}_probabilities.nii.gz")
        lesion_probability = np.asarray(probabilities.dataobj[..., LESION], np.float32)
        for inside, cnr in lesion_contrasts(labels, image):
            rows.append((inside.sum() * voxel_ml, cnr, float(lesion_probability[inside].max())))
    return rows


def small_lesion_cnr(data: Path, subset: str) -> str:
    """'min-max (median n)' of the CNR of the lesions under 3 mL in `subset` ("Tr" or "Ts")."""
    values = []
    for label_path in sorted((data / f"labels{subset}").glob("*.nii.gz")):
        _, labels, image, voxel_ml = _case(data, subset, label_path)
        values += [cnr for inside, cnr in lesion_contrasts(labels, image) if inside.sum() * voxel_ml < 3.0]
    return f"{min(values):.1f}-{max(values):.1f} (median {np.median(values):.1f}, {len(values)} lesions)"


def table(rows: list[tuple[float, float, float]]) -> str:
    """Markdown: lesions under 3 mL found at each threshold per CNR stratum, then those of 3 mL and more."""
    lines = [
        "| lesions | CNR | count | " + " | ".join(f"found at p >= {t}" for t in THRESHOLDS) + " |",
        "| --- | --- | ---: |" + " ---: |" * len(THRESHOLDS),
    ]
    array = np.asarray(rows)
    small = array[:, 0] < 3.0
    groups = [
        (f"< 3 mL | {low:g} to {high:g}", small & (array[:, 1] >= low) & (array[:, 1] < high))
        for low, high in CNR_STRATA
    ]
    # a large lesion's mean takes in its dark necrotic core: its CNR says nothing of its enhancing rim
    groups.append((">= 3 mL | any", ~small))
    for name, chosen in groups:
        group = array[chosen]
        found = " | ".join(str(int(np.sum(group[:, 2] >= t))) for t in THRESHOLDS)
        lines.append(f"| {name} | {len(group)} | {found} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="dataset folder with imagesTs/ and labelsTs/")
    parser.add_argument("predictions", type=Path, help="folder of <case>_probabilities.nii.gz")
    args = parser.parse_args()
    print(table(lesion_rows(args.data, args.predictions)))
    print(
        f"\nCNR of the lesions under 3 mL: training cases {small_lesion_cnr(args.data, 'Tr')}, test cases "
        f"{small_lesion_cnr(args.data, 'Ts')}"
    )


if __name__ == "__main__":
    main()
