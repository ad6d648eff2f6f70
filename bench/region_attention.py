"""Peak memory and time of region attention against dense masked attention, at a 3D patch's attention grid.

Default: 16^3 tokens (a 128^3 patch at 1/8 resolution), 64 channels in 8 heads, batch 2, float32, one
forward + backward of the attention alone (query, key, value given). Variants, each in its own process so
one's memory does not count towards the next:

- ``dense``: the authors' R-MSA: all N x N scores, -1000 added across regions, softmax, times V;
- ``dense_sdpa``: PyTorch's `scaled_dot_product_attention` with the N x N boolean region mask;
- ``region_<partition>``: `medattn.models.region_attention.region_attention` (partition built inside the
  measurement) with: ``grid`` cubes of 4^3 tokens; ``slic`` superpixels of a smooth random volume (region
  size 64 tokens); ``global`` one region; ``single`` every token its own region.

Peak memory is above what the inputs held: on CUDA `torch.cuda.max_memory_allocated` after a warm-up
step; on CPU the peak resident set (VmHWM, reset through /proc/self/clear_refs) over the first step,
which includes thread pools and allocator caching: an upper bound. Times are the fastest of `--steps`
steps after that one (a shared CPU is noisy).
Run: .venv/bin/python bench/region_attention.py [--grid 16] [--channels 64] [--heads 8] [--batch 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("dense", "dense_sdpa", "region_grid", "region_slic", "region_global", "region_single")


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident) in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak_resident() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _regions(variant: str, batch: int, grid: int):
    """Region ids (batch, grid^3) for a variant."""
    import numpy as np
    import torch
    from scipy import ndimage

    from medattn.models.region_attention import window_ids
    from medattn.transforms.regions import superpixels

    tokens = grid**3
    if variant == "region_grid":
        return window_ids((grid,) * 3, 4).expand(batch, -1)
    if variant == "region_global":
        return torch.zeros(batch, tokens, dtype=torch.long)
    if variant == "region_single":
        return torch.arange(tokens).expand(batch, -1)
    rng = np.random.default_rng(0)
    maps = []
    for _ in range(batch):
        volume = ndimage.gaussian_filter(rng.standard_normal((1, grid, grid, grid)), sigma=(0, 2, 2, 2))
        maps.append(torch.from_numpy(superpixels(volume, region_size=64)).flatten())
    return torch.stack(maps).long()


def measure(variant: str, args: argparse.Namespace) -> dict:
    """Time and peak memory of one variant in this process."""
    import torch
    import torch.nn.functional as F

    from medattn.models.region_attention import RegionPartition, region_attention

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    width = args.channels // args.heads
    tokens = args.grid**3
    q, k, v = (
        torch.randn(args.batch, args.heads, tokens, width, device=device, requires_grad=True)
        for _ in range(3)
    )
    regions = _regions(variant, args.batch, args.grid).to(device)
    scale = args.heads**-0.5  # as the authors' code

    def step() -> None:
        if variant == "dense":
            same = regions[:, :, None] == regions[:, None, :]
            mask = (~same).float() * -1000.0
            scores = q @ k.transpose(-2, -1) * scale + mask[:, None]
            out = scores.softmax(dim=-1) @ v
        elif variant == "dense_sdpa":
            same = regions[:, None, :, None] == regions[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=same, scale=scale)
        else:
            out = region_attention(q, k, v, RegionPartition.from_regions(regions), scale)
        out.square().sum().backward()
        q.grad = k.grad = v.grad = None

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Memory over the first step of a fresh process: after a step, the C allocator keeps freed blocks
    # resident, so a second step would reuse them and show (almost) nothing above what was held.
    if device.type == "cuda":
        step()  # CUDA's caching allocator is measured exactly; warm up its kernels first
        torch.cuda.reset_peak_memory_stats(device)
        held = torch.cuda.memory_allocated(device) / 2**20
    else:
        _reset_peak_resident()
        held = _status_mb("VmRSS")
    step()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20 - held
    else:
        peak = _status_mb("VmHWM") - held
    times = []
    for _ in range(args.steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    count = RegionPartition.from_regions(regions).region_count
    return {
        "variant": variant,
        "regions": count,
        "peak_mb": peak,
        "seconds": min(times),
        "device": str(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=16, help="tokens per side of the 3D attention grid")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (the fastest is reported)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return
    argv = [
        f"--{name}={getattr(args, name)}"
        for name in ("grid", "channels", "heads", "batch", "steps", "device")
    ]
    print(
        f"{args.grid}^3 tokens, {args.channels} channels, {args.heads} heads, batch {args.batch}, float32, "
        "forward + backward; peak memory above the inputs"
    )
    print("| variant | regions (batch) | peak memory (MB) | time (s) | device |")
    print("| --- | ---: | ---: | ---: | --- |")
    for variant in args.variants.split(","):
        command = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", variant]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"| {variant} | failed: {(done.stderr.strip().splitlines() or ['?'])[-1]} | | | |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        cells = [variant, row["regions"], f"{row['peak_mb']:.0f}", f"{row['seconds']:.3f}", row["device"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
