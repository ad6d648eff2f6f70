"""Frames per second of PraNet's prediction (eval mode, inference_mode) at the paper's 352 x 352.

The paper reports about 50 FPS on a GPU. This times one forward per frame (batch 1 by default) after a
warm-up, with the default configuration (Res2Net-50 layout, 3 input channels, 2 classes) unless options
are given, and prints one markdown table row: median and best time per batch, FPS from the median.
On CPU the machine may be shared: the best run is the least disturbed, the median what a user sees.

Run: .venv/bin/python bench/pranet_fps.py [--size 352] [--batch 1] [--device auto] [--amp none|bf16|fp16]
     [--threads N] [--runs 20] [--options "backbone='resnet';width=32"]
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time

import torch

from medattn.models import create


def parse_options(text: str) -> dict:
    """'width=32;backbone="resnet"' -> {"width": 32, "backbone": "resnet"}."""
    options = {}
    for item in filter(None, text.split(";")):
        key, _, value = item.partition("=")
        options[key.strip()] = ast.literal_eval(value.strip())
    return options


def time_forward(args: argparse.Namespace) -> dict:
    """Seconds per forward (median and best of `args.runs`) and the setting they were taken in."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    model = create("pranet", 2, 3, 2, **parse_options(args.options)).eval().to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]

    def step() -> float:
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.runs)]
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    return {"device": name, "median": statistics.median(times), "best": min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=352, help="square input edge in pixels (multiple of 32)")
    parser.add_argument("--batch", type=int, default=1, help="frames per forward")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast dtype")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = PyTorch's default)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards first")
    parser.add_argument("--runs", type=int, default=20, help="timed forwards")
    parser.add_argument("--options", default="", help="model options, e.g. \"width=32;backbone='resnet'\"")
    args = parser.parse_args()
    result = time_forward(args)
    fps = args.batch / result["median"]
    print("| model | options | input | batch | device | amp | median ms | best ms | FPS (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| pranet | {args.options or 'default'} | {args.size}x{args.size} | {args.batch} | "
        f"{result['device']} | {args.amp} | {1e3 * result['median']:.1f} | {1e3 * result['best']:.1f} | "
        f"{fps:.1f} |"
    )


if __name__ == "__main__":
    main()
