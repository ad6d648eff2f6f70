"""Regenerate every file of medattn's sample data, reproducibly: `.venv/bin/python sample_data/generate.py`.

Brain MRI cases come from the MNI ICBM152 2009a template shipped inside nilearn (a dev dependency);
everything else is generated. Fixed seeds and timestamp-free writers make a second run give the same
bytes. Only the folders listed in OUTPUTS are replaced; anything else under sample_data/ (model
packages, the README) is left alone.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from gen_brain import dataset_json, write_brain_dataset
from gen_dicom import write_dicom_series
from gen_endoscopy import video_frames, write_frames, write_npz, write_video

ROOT = Path(__file__).resolve().parent
OUTPUTS = ("brain_mri", "brain_mri_dicom", "endoscopy", "endoscopy_video")
SIZE_LIMIT_BYTES = 20 * 1024 * 1024
DICOM_CASE = "brain_000"
ENDOSCOPY_FRAMES, ENDOSCOPY_SIZE, ENDOSCOPY_SEED = 6, 256, 2024
VIDEO_FRAMES, VIDEO_SIZE, VIDEO_FPS, VIDEO_SEED = 30, 192, 12, 7


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> int:
    for name in OUTPUTS:
        shutil.rmtree(ROOT / name, ignore_errors=True)

    images = write_brain_dataset(ROOT / "brain_mri")
    (ROOT / "brain_mri" / "dataset.json").write_text(json.dumps(dataset_json(), indent=2) + "\n")

    slices = write_dicom_series(images[DICOM_CASE], ROOT / "brain_mri_dicom" / DICOM_CASE, DICOM_CASE, seed=3)
    if [p.name for p in slices] == sorted(p.name for p in slices):
        raise RuntimeError("DICOM file names must not be in slice order: readers must sort by position")

    write_frames(ROOT / "endoscopy", ENDOSCOPY_FRAMES, ENDOSCOPY_SIZE, ENDOSCOPY_SEED)

    frames, masks = video_frames(VIDEO_FRAMES, VIDEO_SIZE, VIDEO_SEED)
    write_video(frames, ROOT / "endoscopy_video" / "colonoscopy_clip.mp4", VIDEO_FPS)
    write_npz(ROOT / "endoscopy_video" / "colonoscopy_clip_masks.npz", masks=masks)

    total = _folder_bytes(ROOT)
    for name in OUTPUTS:
        print(f"{name:18s} {_folder_bytes(ROOT / name) / 1e6:6.2f} MB")
    print(f"{'sample_data total':18s} {total / 1e6:6.2f} MB")
    if total >= SIZE_LIMIT_BYTES:
        print(f"sample_data/ is {total / 1e6:.1f} MB, over the 20 MiB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
