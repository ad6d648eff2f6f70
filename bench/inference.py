"""Benchmark `sliding_window_predict` against a plain MONAI sliding-window loop, same weights and overlap.

One 3D volume (default 160 x 160 x 96 voxels, smoothed noise), one MONAI UNet with batch norm
(channels 16-32-64-128, 2 residual units; random weights, seeded), patch 96 x 96 x 64, gaussian blending,
overlap 0.5, 4 windows per batch, on CPU. Timed, interleaved round by round so machine load hits all alike:

1. plain MONAI, written the obvious way: ``net.eval()``, ``torch.no_grad()``,
   ``sliding_window_inference(..., mode="gaussian")``, then ``torch.softmax`` on the stitched logits;
2. ``sliding_window_predict`` with its defaults (on CPU: float32, no channels-last);
3. ``sliding_window_predict(..., channels_last=True)``: channels-last-3d on CPU, to see if it pays;
4. the network forward alone on every window batch (no cutting, blending or softmax): the floor;
5. plain MONAI again with one window per batch, to show what batching windows is worth;
6. the window loop's own cost: both ways again with a 1x1x1-conv network (network time ~0), measured
   directly because subtracting two noisy multi-second timings cannot resolve it.

Also printed: agreement of the masks (Dice of argmax per label, vs plain MONAI), the largest probability
difference, and peak resident memory above the start of each run (sampled every 5 ms).
Prints a table and writes its section of BENCHMARKS.md (``--no-write`` skips it).
Run: .venv/bin/python bench/inference.py [--rounds 3] [--shape 160 160 96] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import threading
import time
from collections.abc import Callable

import torch
from report import machine, write_section  # bench/report.py (scripts run from bench/ on sys.path)

PATCH = (96, 96, 64)
OVERLAP = 0.5
SW_BATCH = 4
CLASSES = 3


def _resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak resident memory (MB) above the level at entry, sampled every 5 ms by a thread."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = _resident_mb()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, _resident_mb())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, _resident_mb())

    @property
    def above_start_mb(self) -> float:
        return self.peak - self.start


def build(shape: tuple[int, ...]) -> tuple[torch.nn.Module, torch.Tensor]:
    """The seeded UNet and a smooth (1, *shape) test volume."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    network = UNet(
        3, 1, CLASSES, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2, norm="batch"
    )
    with torch.no_grad():  # non-trivial running statistics, as after training
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    noise = torch.randn(1, 1, *shape)
    image = torch.nn.functional.avg_pool3d(noise, 9, stride=1, padding=4)[0] * 3  # blobs, not white noise
    return network.eval(), image


def plain_monai(network: torch.nn.Module, image: torch.Tensor, sw_batch_size: int = SW_BATCH) -> torch.Tensor:
    """The obvious way to run MONAI's sliding window."""
    from monai.inferers import sliding_window_inference

    network.eval()
    with torch.no_grad():
        logits = sliding_window_inference(
            image[None], PATCH, sw_batch_size, network, overlap=OVERLAP, mode="gaussian"
        )
        return torch.softmax(logits, dim=1)[0]


def medattn_predict(network: torch.nn.Module, image: torch.Tensor, **options) -> torch.Tensor:
    from medattn.inference import sliding_window_predict

    return sliding_window_predict(network, image, PATCH, overlap=OVERLAP, sw_batch_size=SW_BATCH, **options)


def forward_only(network: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Only the network, on the same window batches (cut beforehand, outside the clock)."""
    from monai.data.utils import dense_patch_slices

    size = image.shape[1:]
    interval = [max(int(p * (1 - OVERLAP)), 1) if p < s else p for p, s in zip(PATCH, size, strict=True)]
    windows = [image[(slice(None), *s)] for s in dense_patch_slices(size, PATCH, interval)]
    batches = [torch.stack(windows[i : i + SW_BATCH]) for i in range(0, len(windows), SW_BATCH)]
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            network(batch)
    forward_only.seconds = time.perf_counter() - start  # type: ignore[attr-defined]
    return torch.empty(0)


LOOP_ROUNDS = 7


def window_loop_seconds(image: torch.Tensor) -> tuple[float, float]:
    """Best seconds of plain MONAI and of medattn with a 1x1x1-conv network: the loop's own cost."""
    network = torch.nn.Conv3d(1, CLASSES, 1).eval()
    plain, medattn = [], []
    for _ in range(LOOP_ROUNDS):
        start = time.perf_counter()
        plain_monai(network, image)
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        medattn_predict(network, image)
        medattn.append(time.perf_counter() - start)
    return min(plain), min(medattn)


def dice_per_label(a: torch.Tensor, b: torch.Tensor) -> float:
    """Smallest Dice over the foreground labels of two argmax masks (medattn's Dice: 1 when both empty)."""
    from medattn.metrics.overlap import dice

    return min(dice((a == value).numpy(), (b == value).numpy()) for value in range(1, CLASSES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 160, 96), help="volume size in voxels")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (best is reported)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 is steadier on a busy machine",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from medattn.inference import count_windows, stitched_bytes

    description = machine()
    network, image = build(tuple(args.shape))
    channels_last_network = copy.deepcopy(network)
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "plain MONAI sliding_window_inference + softmax": lambda: plain_monai(network, image),
        "medattn sliding_window_predict (defaults)": lambda: medattn_predict(network, image),
        # Its own copy: channels-last converts the network's weights in place.
        "medattn sliding_window_predict, channels_last=True": lambda: medattn_predict(
            channels_last_network, image, channels_last=True
        ),
        "network forward alone on the same windows": lambda: forward_only(network, image),
        "plain MONAI, 1 window per batch": lambda: plain_monai(network, image, sw_batch_size=1),
    }
    for run in variants.values():  # warm-up: oneDNN builds its kernels for the window shape once
        run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    memory: dict[str, float] = {}
    outputs: dict[str, torch.Tensor] = {}
    for round_index in range(args.rounds):
        for name, run in variants.items():
            with PeakMemory() as peak:
                start = time.perf_counter()
                outputs[name] = run()
                elapsed = time.perf_counter() - start
            seconds[name].append(forward_only.seconds if name.startswith("network") else elapsed)
            memory[name] = max(memory.get(name, 0.0), peak.above_start_mb)
            print(f"round {round_index + 1}: {name}: {seconds[name][-1]:.2f} s")
    plain_name = next(iter(variants))
    plain_s = min(seconds[plain_name])
    reference = outputs[plain_name]
    header = (
        "| what | best s | median s | plain MONAI / this | peak RSS above start MB | min Dice vs plain | "
        "max abs prob diff |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    lines = []
    for name in variants:
        best = min(seconds[name])
        agree, diff = "-", "-"
        if outputs[name].numel():
            agree = f"{dice_per_label(outputs[name].argmax(0), reference.argmax(0)):.5f}"
            diff = f"{(outputs[name] - reference).abs().max().item():.1e}"
        lines.append(
            f"| {name} | {best:.2f} | {statistics.median(seconds[name]):.2f} | {plain_s / best:.2f} | "
            f"{memory[name]:.0f} | {agree} | {diff} |"
        )
    table = "\n".join([header, *lines])
    loop_plain, loop_medattn = window_loop_seconds(image)
    forward_s = min(seconds["network forward alone on the same windows"])
    reading = (
        f"The window loop alone (cutting, blending, softmax; a 1x1x1-conv network, best of {LOOP_ROUNDS}): "
        f"plain MONAI {loop_plain:.3f} s, medattn {loop_medattn:.3f} s, against {forward_s:.2f} s of "
        "network forward. On CPU the network is the time: equal-network speedups must come from fewer or "
        "cheaper forwards (batched windows, overlap, the model itself), not from the loop; the spread of "
        "the rows above is load on the shared machine."
    )
    shape = "x".join(str(s) for s in args.shape)
    windows = count_windows(args.shape, PATCH, OVERLAP)
    stitched_mb = stitched_bytes(args.shape, CLASSES) / 2**20
    print(table)
    print(f"{windows} windows; stitch-device memory by formula {stitched_mb:.0f} MB")
    print(reading)
    if args.no_write:
        return
    section = (
        f"`.venv/bin/python bench/inference.py --rounds {args.rounds}`. "
        f"Sliding-window prediction of one {shape} volume on CPU: MONAI UNet (batch norm, channels "
        f"16-32-64-128, 2 residual units, random seeded weights), patch {PATCH}, overlap {OVERLAP}, "
        f"gaussian blending, {SW_BATCH} windows per batch, {windows} windows, {CLASSES} classes; best of "
        f"{args.rounds} interleaved rounds after a warm-up. Stitch-device memory by `stitched_bytes`: "
        f"{stitched_mb:.0f} MB (logits, count map, image, softmax scratch).\n\n"
        f"Machine: {description}.\n\n{table}\n\n{reading}\n"
    )
    write_section("## the sliding window alone: `bench/inference.py`", section)


if __name__ == "__main__":
    main()
