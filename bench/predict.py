"""End-to-end prediction: `medattn.load_model(...).predict` vs a plain MONAI loop, same weights and overlap.

One brain MRI case from sample_data, resampled to a finer grid so inference has real work (default 1 mm:
152 x 190 x 164 voxels), segmented by a model package (default: the default AGUNet for CPU with seeded
random weights and non-trivial batch-norm statistics, trained spacing 1.5 mm, patch 64^3, 4 classes; or
`--package` for any package folder). Each arm runs read -> preprocess -> sliding window -> back to the
input grid -> argmax -> write NIfTI, interleaved round by round so machine load hits both alike:

1. plain MONAI, written the obvious way: LoadImaged, EnsureChannelFirstd, Orientationd(RAS), Spacingd,
   NormalizeIntensityd(nonzero, channel_wise), `torch.no_grad()` + `sliding_window_inference(...,
   mode="gaussian")`, softmax, Invertd (bilinear), argmax, SaveImage;
2. medattn: `load_model(pkg).predict(path)` then `medattn.io.save_mask`, with its stages timed separately
   (read, preprocess, sliding window, invert + argmax, write) and the network forward alone on the same
   windows, so the pipeline's overhead over the model is visible.

Also: agreement of the masks (Dice per label, medattn vs plain), peak resident memory above the start of
each arm and stage (sampled every 5 ms, in one untimed round before the timed ones: the sampling thread
slows a 2-core machine's forward). Writes its section of BENCHMARKS.md (``--no-write`` skips it).
Run: .venv/bin/python bench/predict.py [--rounds 3] [--spacing 1.0] [--package PKG]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from inference import PeakMemory  # bench/inference.py
from report import machine, write_section

from medattn.io import load_image, save_mask
from medattn.metrics.overlap import dice
from medattn.models.registry import network_defaults
from medattn.package import PackageConfig, build_network, load_package, save_package
from medattn.plan import Plan

SAMPLE = (
    Path(__file__).resolve().parents[1] / "sample_data" / "brain_mri" / "imagesTs" / "brain_004_0000.nii.gz"
)
OVERLAP, SW_BATCH = 0.5, 4


def finer_case(folder: Path, spacing: float) -> Path:
    """The sample case resampled (trilinear) to `spacing` mm, as a scanner's finer grid would give it."""
    image = load_image(SAMPLE)
    zoom = float(np.linalg.norm(image.affine[:3, 0])) / spacing
    size = [int(round(s * zoom)) for s in image.shape[1:]]
    data = torch.nn.functional.interpolate(image[None].as_tensor(), size=size, mode="trilinear")[0, 0]
    affine = np.asarray(image.affine, dtype=np.float64).copy()
    affine[:3, :3] = affine[:3, :3] / zoom
    path = folder / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(data.numpy(), affine), path)
    return path


def random_package(folder: Path, stem_stride: int = 2) -> Path:
    """AGUNet with seeded random weights (and batch-norm statistics as after training, where it has them):
    stem_stride 2 is the CPU default (`network_defaults`: also instance norm), 1 the CUDA default (the
    paper's network with `medattn train`'s leaky ReLU)."""
    plan = Plan(
        spatial_dims=3,
        in_channels=1,
        num_classes=4,
        spacing=[1.5, 1.5, 1.5],
        patch_size=[64, 64, 64],
        batch_size=2,
        preset="mr",
        labels={0: "background", 1: "grey_matter", 2: "white_matter", 3: "lesion"},
    )
    options = network_defaults("agunet", "cpu" if stem_stride == 2 else "cuda")
    config = PackageConfig(model="agunet", model_kwargs=dict(options), plan=plan)
    torch.manual_seed(0)
    network = build_network(config)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return save_package(folder, network.state_dict(), config)


def trained_package(folder: Path, seconds: float, stem_stride: int = 2) -> Path:
    """The default AGUNet trained `seconds` on the brain samples at 1.5 mm (what `medattn train` gives on a
    CPU); with `stem_stride` 1 the CUDA default network (full resolution in the first stage) instead."""
    import medattn

    # The CPU options (stem stride 2, instance norm) replaced by the CUDA default's (stride 1, batch norm).
    cuda_network = {**network_defaults("agunet", "cuda"), "stem_stride": 1, "norm": "batch"}
    options = {} if stem_stride == 2 else {"model_kwargs": cuda_network}
    run = medattn.train(
        SAMPLE.parents[1],
        model="agunet",
        out=folder,
        device="cpu",
        epochs=10_000,
        max_time=seconds,
        spacing=[1.5, 1.5, 1.5],
        val_fraction=0.25,
        **options,
    )
    return run.package


def plain_monai(network: torch.nn.Module, config: PackageConfig, path: Path, out: Path) -> np.ndarray:
    """The obvious MONAI inference script for a trained network."""
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        SaveImage,
        Spacingd,
    )

    pre = Compose(
        [
            LoadImaged("image"),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=config.plan.spacing, mode="bilinear"),
            NormalizeIntensityd("image", nonzero=True, channel_wise=True),
        ]
    )
    data = pre({"image": str(path)})
    network.eval()
    with torch.no_grad():
        logits = sliding_window_inference(
            data["image"][None], config.plan.patch_size, SW_BATCH, network, overlap=OVERLAP, mode="gaussian"
        )
    data["pred"] = torch.softmax(logits, dim=1)[0]
    inverted = Invertd("pred", pre, orig_keys="image", nearest_interp=False)(data)["pred"]
    labels = inverted.argmax(0, keepdim=True).to(torch.uint8)
    SaveImage(output_dir=str(out), output_postfix="plain", separate_folder=False, print_log=False)(labels)
    return labels[0].numpy()


class NoMemory:
    """Stands in for PeakMemory in timed rounds: its sampling thread wakes every 5 ms, and on 2 cores each
    wake stalls one of torch's two threads (measured: +3 to +18 % on the end-to-end time of this case)."""

    above_start_mb = float("nan")

    def __enter__(self) -> NoMemory:
        return self

    def __exit__(self, *exc) -> None:
        pass


class ModelClock:
    """Seconds spent inside the network's forward calls while active (forward hooks on the network the
    sliding window runs): the model time of that very run, so the pipeline's overhead over it is not a
    difference between two runs on a shared machine whose speed drifts by +-5 % between them."""

    def __init__(self, network: torch.nn.Module):
        self.network, self.seconds, self._start = network, 0.0, 0.0

    def __enter__(self) -> ModelClock:
        self._handles = [
            self.network.register_forward_pre_hook(self._started),
            self.network.register_forward_hook(self._finished),
        ]
        return self

    def _started(self, *_) -> None:
        self._start = time.perf_counter()

    def _finished(self, *_) -> None:
        self.seconds += time.perf_counter() - self._start

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()


def medattn_stages(
    predictor, path: Path, out: Path, memory: bool = False
) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """`predictor.predict(path)` + save_mask, stage by stage: {stage: (seconds, peak MB above start)}.

    The stages are the Predictor's own (`preprocess`, `sliding_window`, `to_input_labels`), so this times
    exactly what `predict` runs. Memory is sampled only with `memory` (then the times are not clean).
    """
    from monai.data import MetaTensor

    stages: dict[str, tuple[float, float]] = {}

    def timed(name, function):
        with PeakMemory() if memory else NoMemory() as sampled:
            start = time.perf_counter()
            result = function()
            stages[name] = (time.perf_counter() - start, sampled.above_start_mb)
        return result

    image = timed("read", lambda: predictor.load(path))
    preprocessed = timed("preprocess", lambda: predictor.preprocess(image))
    probabilities = timed("sliding window", lambda: predictor.sliding_window(preprocessed))
    labels, _ = timed(
        "invert + argmax", lambda: predictor.to_input_labels(probabilities, preprocessed, image)
    )
    mask = MetaTensor(labels[None], affine=image.affine)
    timed("write", lambda: save_mask(mask, out / "case_medattn.nii.gz"))
    return labels.numpy(), stages


def forward_seconds(predictor, path: Path) -> float:
    """The network alone on the windows the sliding window cuts (cut outside the clock)."""
    from monai.data.utils import dense_patch_slices

    image = predictor.preprocess(predictor.load(path)).as_tensor()
    patch = predictor.plan.patch_size
    size = image.shape[1:]
    interval = [max(int(p * (1 - OVERLAP)), 1) if p < s else p for p, s in zip(patch, size, strict=True)]
    windows = [image[(slice(None), *s)] for s in dense_patch_slices(size, patch, interval)]
    windows = [w for w in windows if tuple(w.shape[1:]) == tuple(patch)]
    batches = [torch.stack(windows[i : i + SW_BATCH]) for i in range(0, len(windows), SW_BATCH)]
    if predictor.compile and len(batches[-1]) < SW_BATCH:  # padded as the sliding window pads it
        last = batches[-1]
        batches[-1] = torch.cat([last, last.new_zeros((SW_BATCH - len(last), *last.shape[1:]))])
    network = predictor._inference_network()  # what the sliding window runs (batch norms folded)
    start = time.perf_counter()
    with torch.no_grad():  # as the sliding window runs float32 windows (a compiled network: the same graph)
        for batch in batches:
            network(batch.to(memory_format=torch.channels_last_3d))
    return time.perf_counter() - start


def smallest_dice(a: np.ndarray, b: np.ndarray, labels) -> float:
    """Smallest Dice over `labels` of two label maps (medattn's Dice: 1 when both are empty)."""
    return min(dice(a == value, b == value) for value in labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per arm (best is reported)")
    parser.add_argument("--spacing", type=float, default=1.0, help="grid of the test case in mm")
    parser.add_argument("--package", type=Path, help="a model package folder (default: random AGUNet)")
    parser.add_argument(
        "--stem-stride", type=int, default=2, help="the AGUNet's stem_stride (1 or 2), random or --train"
    )
    parser.add_argument(
        "--train",
        type=float,
        metavar="SECONDS",
        help="instead of random weights, train the default AGUNet on the brain samples (1.5 mm) this long: "
        "a trained network's smooth label maps, where the label-boundary shortcut back to the input grid "
        "applies (random weights give speckle, boundaries everywhere)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="medattn with --compile (torch.compile, inductor); the compilation is timed apart, before",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()
    import medattn

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        path = finer_case(work, args.spacing)
        package = args.package or (
            trained_package(work / "trained", args.train, args.stem_stride)
            if args.train
            else random_package(work / "package", args.stem_stride)
        )
        predictor = medattn.load_model(
            package, device="cpu", overlap=OVERLAP, sw_batch_size=SW_BATCH, compile=args.compile
        )
        compile_seconds = None
        if args.compile:
            start = time.perf_counter()
            predictor.predict(path)  # compiles on the first window batch
            compile_seconds = time.perf_counter() - start
        network, config = load_package(package)
        shape = tuple(nib.load(path).shape)
        # Memory first, in one untimed round per arm (the sampling thread slows what it watches).
        with PeakMemory() as memory:
            plain_monai(network, config, path, work)
        plain_memory = memory.above_start_mb
        with PeakMemory() as memory:
            _, memory_stages = medattn_stages(predictor, path, work, memory=True)
        medattn_memory = memory.above_start_mb
        plain_times, medattn_times, all_stages = [], [], []
        forwards = []  # the bare forward, timed in each round next to the arms (the machine's load varies)
        model_times = []  # the network's forward calls inside each medattn run
        for round_index in range(args.rounds):
            start = time.perf_counter()
            plain_mask = plain_monai(network, config, path, work)
            plain_times.append(time.perf_counter() - start)
            with ModelClock(predictor._inference_network()) as clock:
                start = time.perf_counter()
                mask, stages = medattn_stages(predictor, path, work)
                medattn_times.append(time.perf_counter() - start)
            model_times.append(clock.seconds)
            all_stages.append(stages)
            forwards.append(forward_seconds(predictor, path))
            print(
                f"round {round_index + 1}: plain MONAI {plain_times[-1]:.2f} s, "
                f"medattn {medattn_times[-1]:.2f} s (its network calls {model_times[-1]:.2f} s), "
                f"forward alone {forwards[-1]:.2f} s"
            )
        forward = min(forwards)
        # End to end beyond the bare forward (stitching included), per round: both timed under the same load.
        overheads = [(total - bare) / bare for total, bare in zip(medattn_times, forwards, strict=True)]
        # End to end beyond the network's own forward calls in the same run: the issue's "overhead of model
        # time", free of the drift between two runs.
        in_run = [(total - model) / model for total, model in zip(medattn_times, model_times, strict=True)]
    stride = config.model_kwargs.get("stem_stride", 1)
    patch = "x".join(str(p) for p in config.plan.patch_size)
    package_name = (
        f"AGUNet (stem_stride {stride}: the {'CPU' if stride == 2 else 'CUDA'} default) trained "
        f"{args.train:.0f} s on the brain samples, 1.5 mm, patch {patch}"
        if args.train
        else f"AGUNet stem_stride {args.stem_stride}"
        + (" (CPU default, instance norm)" if args.stem_stride == 2 else "")
        + ", random weights, 1.5 mm, patch 64^3"
    )
    # One section per network: the CPU default (stem_stride 2), full resolution, or the package named.
    configuration = (
        f", package {args.package.name}"
        if args.package
        else ("" if stride == 2 else f", full resolution (stem_stride {stride})")
    )
    labels = [v for v in config.plan.labels if v]
    agreement = smallest_dice(mask, plain_mask, labels)
    best = int(np.argmin(medattn_times))
    stage_rows = "\n".join(
        f"| medattn: {name} | {seconds:.2f} | | {memory_stages[name][1]:.0f} |"
        for name, (seconds, _) in all_stages[best].items()
    )
    pipeline = medattn_times[best] - all_stages[best]["sliding window"][0]
    table = "\n".join(
        [
            "| what | best s | median s | peak RSS above start MB |",
            "| --- | ---: | ---: | ---: |",
            f"| plain MONAI script | {min(plain_times):.2f} | {statistics.median(plain_times):.2f} | "
            f"{plain_memory:.0f} |",
            f"| medattn load_model().predict + save_mask | {min(medattn_times):.2f} | "
            f"{statistics.median(medattn_times):.2f} | {medattn_memory:.0f} |",
            stage_rows,
            f"| network forward alone on the same windows | {forward:.2f} | "
            f"{statistics.median(forwards):.2f} | |",
        ]
    )
    summary = (
        f"Speed-up, plain MONAI / medattn (best of {args.rounds}): "
        f"{min(plain_times) / min(medattn_times):.2f}x; "
        f"pipeline around the sliding window (read, preprocess, invert, write): {pipeline:.2f} s = "
        f"{100 * pipeline / forward:.0f} % of the network's forward time; sliding window / forward alone: "
        f"{all_stages[best]['sliding window'][0] / forward:.2f}; smallest Dice per label medattn vs plain: "
        f"{agreement:.5f}. End to end beyond the bare forward, per round (same load): "
        + ", ".join(f"{100 * o:.0f} %" for o in overheads)
        + f" (median {100 * statistics.median(overheads):.0f} %); beyond the network's forward calls in the "
        "same run (hooks): "
        + ", ".join(f"{100 * o:.0f} %" for o in in_run)
        + f" (median {100 * statistics.median(in_run):.0f} %)."
    )
    print(table)
    print(summary)
    if not args.no_write:
        section = (
            f"`.venv/bin/python bench/predict.py {' '.join(sys.argv[1:])}`. "
            f"Case: sample brain MRI resampled to {args.spacing} mm ({shape} voxels); package: "
            f"{args.package or package_name}"
            "; "
            f"overlap {OVERLAP}, {SW_BATCH} windows per batch, float32 on CPU"
            + (
                f"; medattn with --compile (first prediction, compilation included: {compile_seconds:.0f} s; "
                "not in the table)"
                if args.compile
                else ""
            )
            + ".\n\n"
            f"Machine: {machine()}.\n\n{table}\n\n{summary}\n"
        )
        write_section(f"## end-to-end prediction vs plain MONAI{configuration}: `bench/predict.py`", section)


if __name__ == "__main__":
    main()
