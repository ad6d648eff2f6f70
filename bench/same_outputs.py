"""Check that a refactor leaves every user-visible output of predict and evaluate unchanged.

`record` runs the sample packages (`sample_data/models/`) over the sample data with the options that take
different routes through prediction (every mask format, probabilities, attention, TTA, a lesion threshold,
postprocessing, pipelined and in turn, DICOM SEG, 2D PNG with overlays, a video) and evaluates one run
against the references; it stores a fingerprint of every output: decoded arrays and their geometry, CSV
rows without timing columns, the decoded frames of videos. `compare` runs the same again and lists every
output that differs from a recorded fingerprint. Run `record` on the commit before the change and
`compare` after it:

    python bench/same_outputs.py record bench_results/same_outputs.json
    python bench/same_outputs.py compare bench_results/same_outputs.json
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
BRAIN = SAMPLE / "models" / "brain_mri"
ENDOSCOPY = SAMPLE / "models" / "endoscopy"
# Columns that hold run times or run-specific paths, not results.
VOLATILE_COLUMNS = {"seconds", "fps", "output"}

RUNS = {
    "brain_default": (SAMPLE / "brain_mri" / "imagesTs", BRAIN, {}),
    "brain_segnrrd_probs_attention": (
        SAMPLE / "brain_mri" / "imagesTs",
        BRAIN,
        {"format": "seg.nrrd", "save_probabilities": True, "save_attention": True},
    ),
    "brain_tta_threshold_postprocess": (
        SAMPLE / "brain_mri" / "imagesTs",
        BRAIN,
        {
            "tta": True,
            "lesion_threshold": 0.3,
            "keep_largest": True,
            "fill_holes": True,
            "min_lesion_ml": 0.05,
        },
    ),
    "brain_pipelined_mha": (SAMPLE / "brain_mri" / "imagesTs", BRAIN, {"pipelined": True, "format": "mha"}),
    "brain_threshold_probs": (
        SAMPLE / "brain_mri" / "imagesTs",
        BRAIN,
        {"lesion_threshold": 0.3, "save_probabilities": True, "format": "nrrd"},
    ),
    "dicom_seg": (SAMPLE / "brain_mri_dicom", BRAIN, {"format": "dicom-seg"}),
    "dicom_nifti": (SAMPLE / "brain_mri_dicom", BRAIN, {}),
    "endoscopy_png_overlay": (
        SAMPLE / "endoscopy" / "images",
        ENDOSCOPY,
        {"format": "png", "overlay": True, "save_probabilities": True},
    ),
    "endoscopy_nifti_pipelined": (SAMPLE / "endoscopy" / "images", ENDOSCOPY, {"pipelined": True}),
    "video": (SAMPLE / "endoscopy_video" / "colonoscopy_clip.mp4", ENDOSCOPY, {"keep_largest": True}),
}


def _digest(*arrays) -> str:
    hasher = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        hasher.update(str((array.dtype.str, array.shape)).encode())
        hasher.update(array.tobytes())
    return hasher.hexdigest()[:16]


def _image_fingerprint(path: Path) -> str:
    """Array and geometry as a reader sees them (SimpleITK for ITK formats, nibabel for NIfTI)."""
    name = path.name
    if name.endswith((".nii.gz", ".nii")):
        import nibabel as nib

        image = nib.load(path)
        return _digest(np.asarray(image.dataobj), np.round(image.affine, 5))
    if name.endswith(".dcm"):
        import pydicom

        ds = pydicom.dcmread(path)
        positions = [
            tuple(frame.PlanePositionSequence[0].ImagePositionPatient)
            for frame in ds.PerFrameFunctionalGroupsSequence
        ]
        segments = [(s.SegmentNumber, s.SegmentLabel) for s in ds.SegmentSequence]
        return _digest(ds.pixel_array, np.asarray(positions, dtype=np.float64)) + str(segments)
    if name.endswith(".png"):
        from PIL import Image

        return _digest(np.asarray(Image.open(path)))
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    geometry = np.round(np.array(image.GetSpacing() + image.GetOrigin() + image.GetDirection()), 5)
    return _digest(sitk.GetArrayFromImage(image), geometry)


def _csv_fingerprint(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in VOLATILE_COLUMNS} for row in csv.DictReader(handle)]


def _video_fingerprint(path: Path) -> str:
    """Frame count and size only: x264's threaded encoder is not bit-exact from run to run (the masks the
    overlay draws are compared as PNGs)."""
    import av

    with av.open(str(path)) as container:
        shapes = [frame.to_ndarray(format="rgb24").shape for frame in container.decode(video=0)]
    return f"{len(shapes)} frames {sorted(set(shapes))}"


def _fingerprint(folder: Path) -> dict:
    prints = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = str(path.relative_to(folder))
        if path.suffix == ".json":
            continue  # timings and settings; the options are checked by the tests
        if path.suffix == ".csv":
            prints[key] = _csv_fingerprint(path)
        elif path.suffix == ".mp4":
            prints[key] = _video_fingerprint(path)
        else:
            prints[key] = _image_fingerprint(path)
    return prints


def run_all(work: Path) -> dict:
    """Every run of RUNS into `work`, the evaluation of the default brain run; their fingerprints."""
    from medattn.pipelines.evaluate import evaluate, write_outputs
    from medattn.pipelines.predict import predict

    prints = {}
    for name, (inputs, package, options) in RUNS.items():
        out = work / name
        results = predict(inputs, out, package, device="cpu", **options)
        failed = [(r.case, r.error) for r in results if r.status != "done"]
        if failed:
            raise SystemExit(f"{name}: {failed}")
        prints[name] = _fingerprint(out)
        print(f"{name}: {len(prints[name])} outputs", flush=True)
    result = evaluate(work / "brain_default", SAMPLE / "brain_mri" / "labelsTs")
    write_outputs(result, work / "evaluation", plot=False)
    prints["evaluation"] = _fingerprint(work / "evaluation")
    return prints


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "compare"):
        print(__doc__)
        return 2
    command, manifest = argv[0], Path(argv[1])
    with tempfile.TemporaryDirectory() as work:
        prints = run_all(Path(work))
    if command == "record":
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(prints, indent=1))
        print(f"recorded {sum(len(v) for v in prints.values())} outputs -> {manifest}")
        return 0
    recorded = json.loads(manifest.read_text())
    differences = []
    for run in sorted(set(recorded) | set(prints)):
        before, after = recorded.get(run, {}), prints.get(run, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                differences.append(f"{run}/{key}")
    for difference in differences:
        print(f"DIFFERS: {difference}")
    total = sum(len(v) for v in prints.values())
    print(f"{total} outputs compared, {len(differences)} differ")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
