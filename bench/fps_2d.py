"""Frames per second of a 2D model's prediction (eval mode, inference_mode): PraNet at the paper's
352 x 352, the SAM family at 1024 x 1024.

PraNet's paper reports about 50 FPS on a GPU. This times one forward per frame (batch 1 by default) after
a warm-up, with the model's default configuration (PraNet: Res2Net-50 layout; sam_adapter: ViT-B; 3 input
channels, 2 classes) unless options are given, prints one markdown table row (median and best time per
batch, FPS from the median) and writes it to the model's section of BENCHMARKS.md. On CPU the machine may
be shared: the best run is the least disturbed, the median what a user sees.

Run: .venv/bin/python bench/fps_2d.py [--model pranet] [--size 352] [--batch 1] [--device auto]
     [--amp none|bf16|fp16] [--threads N] [--runs 20] [--options "backbone='resnet';width=32"]
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time

import torch
from report import machine, write_section  # bench/report.py

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
    model = create(args.model, 2, 3, 2, **parse_options(args.options)).eval().to(device)
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
    parser.add_argument("--model", default="pranet", help="a 2D registry name, e.g. pranet, sam_adapter")
    parser.add_argument("--size", type=int, default=352, help="square input edge in pixels (multiple of 32)")
    parser.add_argument("--batch", type=int, default=1, help="frames per forward")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast dtype")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = PyTorch's default)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards first")
    parser.add_argument("--runs", type=int, default=20, help="timed forwards")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument("--options", default="", help="model options, e.g. \"width=32;backbone='resnet'\"")
    args = parser.parse_args()
    result = time_forward(args)
    fps = args.batch / result["median"]
    header = "| model | options | input | batch | device | amp | median ms | best ms | FPS (median) |"
    row = (
        f"| {args.model} | {args.options or 'default'} | {args.size}x{args.size} | {args.batch} | "
        f"{result['device']} | {args.amp} | {1e3 * result['median']:.1f} | {1e3 * result['best']:.1f} | "
        f"{fps:.1f} |"
    )
    print(header, "|---|---|---|---|---|---|---|---|---|", row, sep="\n")
    if not args.no_write:
        on_cuda = "" if result["device"].startswith("CPU") else " on CUDA"  # a GPU run keeps its own section
        write_section(
            f"## 2D frames per second, {args.model}{on_cuda}: `bench/fps_2d.py`",
            f"`.venv/bin/python bench/fps_2d.py {' '.join(sys.argv[1:])}`. Machine: {machine()}.\n\n"
            f"{header}\n|---|---|---|---|---|---|---|---|---|\n{row}\n",
        )


if __name__ == "__main__":
    main()
