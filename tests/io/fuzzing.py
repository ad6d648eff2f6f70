"""Seeded mutation fuzzing of every reader: damaged copies of small valid files, each read under a time and
memory limit, must end in a MedattnError naming the file or in an image a viewer can place.

Mutations, as a copy, a USB stick or a tool with its own idea of a header damage files: truncated at a
random byte, a few bytes flipped in the header or anywhere, a block zeroed, garbage appended, an absurd
32-bit integer written where a header field sits. Each format runs in a child process (a reader that
crashes the interpreter fails the run instead of the test session) whose address space is limited, so a
header claiming gigabytes shows up as a MemoryError instead of an OOM kill.

    python tests/io/fuzzing.py                       # every format, the CI count
    python tests/io/fuzzing.py --count 3000 --seed 7 nifti_gz dicom_series   # a longer run by hand
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Seconds one damaged file may take to read (a valid one takes milliseconds).
SECONDS_PER_FILE = 10.0
#: Address space the child may grow by beyond what it holds after importing the readers.
MEMORY_HEADROOM = 3 << 30
MUTATIONS = ("truncate", "flip_header", "flip_any", "zero_block", "append_garbage", "absurd_int32")


def mutate(data: bytes, mutation: str, rng: np.random.Generator, header_bytes: int) -> bytes:
    """One damaged copy of `data`; `header_bytes` bounds where header mutations land."""
    size = len(data)
    header = max(1, min(header_bytes, size))
    buffer = bytearray(data)
    if mutation == "truncate":
        return bytes(buffer[: int(rng.integers(0, size))])
    if mutation in ("flip_header", "flip_any"):
        span = header if mutation == "flip_header" else size
        for position in rng.integers(0, span, size=int(rng.integers(1, 5))):
            buffer[position] ^= int(rng.integers(1, 256))
        return bytes(buffer)
    if mutation == "zero_block":
        start = int(rng.integers(0, size))
        end = min(size, start + int(rng.integers(1, 512)))
        buffer[start:end] = bytes(end - start)
        return bytes(buffer)
    if mutation == "append_garbage":
        return bytes(buffer) + rng.integers(0, 256, size=int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
    if mutation == "absurd_int32":
        position = int(rng.integers(0, max(1, header - 4)))
        value = int(rng.choice([0, -1, 2**31 - 1, -(2**31), 2**16, 65535, 1 << 30]))
        buffer[position : position + 4] = value.to_bytes(4, "little", signed=True)
        return bytes(buffer[:size])
    raise ValueError(mutation)


# --- valid sample files, made small and fresh in the child -------------------------------------------------


def _volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((12, 10, 6)) * 1000).astype(np.int16)


def _nifti(folder: Path, suffix: str) -> Path:
    import nibabel as nib

    affine = np.diag([0.9, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-10, -20, 5)
    path = folder / f"scan{suffix}"
    nib.save(nib.Nifti1Image(_volume(), affine), path)
    return path


def _itk(folder: Path, suffix: str) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(_volume().transpose(2, 1, 0))
    image.SetSpacing((0.9, 0.8, 2.5))
    image.SetOrigin((10.0, 20.0, 5.0))
    path = folder / f"scan{suffix}"
    sitk.WriteImage(image, str(path), useCompression=suffix != ".mha")
    return path


def _seg_nrrd(folder: Path) -> Path:
    from monai.data import MetaTensor

    from medattn.io import save_mask

    labels = np.zeros((12, 10, 6), np.uint8)
    labels[2:6, 3:7, 1:4], labels[7:10, 1:4, 2:5] = 1, 2
    path = folder / "mask.seg.nrrd"
    save_mask(MetaTensor(labels[None], affine=np.diag([0.9, 0.8, 2.5, 1.0])), path, labels={1: "a", 2: "b"})
    return path


def _image2d(folder: Path, suffix: str) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    pixels = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    path = folder / f"photo{suffix}"
    Image.fromarray(pixels).save(path)
    return path


def _tiff_pages(folder: Path) -> Path:
    import tifffile

    rng = np.random.default_rng(2)
    pages = (rng.random((3, 24, 32)) * 65535).astype(np.uint16)
    path = folder / "stack.tif"
    tifffile.imwrite(path, pages, photometric="minisblack")  # 3 grayscale pages, as a microscope writes
    return path


def _testfile(name: str) -> Path:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    if found is None:
        raise SystemExit(f"pydicom test file {name} is missing: pip install pydicom-data")
    return Path(found)


def _dicom_file(folder: Path, name: str) -> Path:
    path = folder / name
    shutil.copy(_testfile(name), path)
    return path


def _dicom_series(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dicom_factory import write_series

    series = folder / "series"
    write_series(series, _volume().astype(np.float32))
    return series


def _video(folder: Path) -> Path:
    import av

    path = folder / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for index in range(6):
            frame = np.full((24, 32, 3), index * 40, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _dicom_seg(folder: Path) -> Path:
    from medattn.io import load_image, save_mask

    series = _dicom_series(folder)
    image = load_image(series)
    labels = np.zeros(tuple(image.shape[1:]), np.uint8)
    labels[2:6, 3:7, 1:4] = 1
    path = folder / "seg.dcm"
    save_mask(labels, path, reference=series, labels={1: "lesion"})
    return path


def _read_image(path: Path):
    from medattn.io import load_image

    return load_image(path)


def _read_label_map(path: Path):
    from medattn.pipelines.evaluate_inputs import load_label_map

    return load_label_map(path)


# name -> (make a valid sample in a folder, bytes that hold the header, the file of the sample to damage
# (None: the sample itself), how to read it)
FORMATS: dict[str, tuple[Callable[[Path], Path], int, Callable[[Path], Path] | None, Callable]] = {
    "nifti": (lambda d: _nifti(d, ".nii"), 352, None, _read_image),
    "nifti_gz": (lambda d: _nifti(d, ".nii.gz"), 64, None, _read_image),
    "nrrd": (lambda d: _itk(d, ".nrrd"), 256, None, _read_image),
    "mha": (lambda d: _itk(d, ".mha"), 512, None, _read_image),
    "seg_nrrd": (_seg_nrrd, 1024, None, _read_image),
    "png": (lambda d: _image2d(d, ".png"), 64, None, _read_image),
    "jpeg": (lambda d: _image2d(d, ".jpg"), 512, None, _read_image),
    "tiff": (lambda d: _image2d(d, ".tif"), 256, None, _read_image),
    "tiff_pages": (_tiff_pages, 512, None, _read_image),
    "bmp": (lambda d: _image2d(d, ".bmp"), 54, None, _read_image),
    "dicom": (lambda d: _dicom_file(d, "CT_small.dcm"), 2048, None, _read_image),
    "dicom_enhanced": (lambda d: _dicom_file(d, "eCT_Supplemental.dcm"), 8192, None, _read_image),
    "dicom_series": (_dicom_series, 2048, lambda series: sorted(series.iterdir())[2], _read_image),
    "dicom_seg": (_dicom_seg, 4096, None, _read_label_map),
    "video": (_video, 256, None, _read_image),
}


def _acceptable(image, path: Path) -> str | None:
    """Why a read image is not one a viewer can place (None when it is)."""
    array = np.asarray(image[0] if isinstance(image, tuple) else image)
    affine = np.asarray(image[1] if isinstance(image, tuple) else image.affine, dtype=np.float64)
    if not np.isfinite(array).all() if array.dtype.kind == "f" else False:
        return "non-finite voxels"
    if not np.isfinite(affine).all():
        return "non-finite affine"
    size = affine.shape[0] - 1
    if abs(np.linalg.det(affine[:size, :size])) == 0:
        return "singular affine"
    return None


def _alarm(signum, frame):
    raise TimeoutError("reader did not finish in time")


def run_format(name: str, count: int, seed: int) -> list[dict]:
    """Read `count` damaged copies of format `name`'s sample; the ones that ended badly."""
    from medattn.errors import MedattnError

    make, header_bytes, damaged_file, read = FORMATS[name]
    rng = np.random.default_rng([seed, sum(name.encode())])
    failures = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        sample = make(_fresh(work / "sample"))
        target_in_sample = damaged_file(sample) if damaged_file else sample
        original = target_in_sample.read_bytes()
        # The valid sample once, so the readers' lazy imports happen outside the per-file limit (a reader
        # under test may refuse even the valid file: the damaged copies are what count).
        with contextlib.suppress(MedattnError):
            read(sample)
        signal.signal(signal.SIGALRM, _alarm)
        for index in range(count):
            mutation = MUTATIONS[index % len(MUTATIONS)]
            trial = _fresh(work / f"trial_{index % 2}")
            copy = trial / sample.name
            if sample.is_dir():
                shutil.copytree(sample, copy)
                victim = copy / target_in_sample.relative_to(sample)
            else:
                victim = copy
            victim.write_bytes(mutate(original, mutation, rng, header_bytes))
            problem = None
            started = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_FILE)
            try:
                problem = _acceptable(read(copy), copy)
            except MedattnError as error:
                if str(copy.name) not in str(error) and str(victim.name) not in str(error):
                    problem = f"MedattnError without the file name: {error}"
            except BaseException as error:  # noqa: BLE001 - what the fuzzing looks for
                problem = f"{type(error).__name__}: {str(error)[:300]}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if problem is not None:
                failures.append(
                    {
                        "format": name,
                        "index": index,
                        "mutation": mutation,
                        "problem": problem,
                        "seconds": round(time.perf_counter() - started, 2),
                    }
                )
            shutil.rmtree(trial, ignore_errors=True)
    return failures


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _limit_memory() -> None:
    """Cap the child's address space at what it holds now plus MEMORY_HEADROOM."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[0])
    current = pages * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (current + MEMORY_HEADROOM, resource.RLIM_INFINITY))


def fuzz_in_child(names: list[str], count: int, seed: int, timeout: float = 600) -> list[dict]:
    """`run_format` for each name in a fresh interpreter with limited memory; a crash is a failure too."""
    command = [sys.executable, __file__, "--child", "--count", str(count), "--seed", str(seed), *names]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    if done.returncode != 0 or not lines:
        return [
            {"format": ",".join(names), "problem": f"child exited {done.returncode}: {done.stderr[-2000:]}"}
        ]
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("formats", nargs="*", help=f"default: all of {', '.join(FORMATS)}")
    parser.add_argument("--count", type=int, default=240, help="damaged copies per format")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = args.formats or list(FORMATS)
    if args.child:
        import warnings

        warnings.simplefilter("ignore")
        import medattn.io  # noqa: F401 - the readers' libraries count as the baseline, not as headroom
        import medattn.pipelines.evaluate  # noqa: F401

        _limit_memory()
        failures = []
        for name in names:
            failures += run_format(name, args.count, args.seed)
        print(json.dumps(failures))
        return 0
    failures = fuzz_in_child(names, args.count, args.seed, timeout=max(600, args.count * len(names)))
    for failure in failures:
        print(json.dumps(failure))
    print(f"{len(failures)} damaged files ended badly ({args.count} per format, seed {args.seed})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
