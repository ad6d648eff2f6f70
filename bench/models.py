"""Benchmark medattn's networks against MONAI's UNet and AttentionUnet: step time and peak memory per model.

Every model is built at its default configuration (deep supervision as its family's default) and run in
its own subprocess at one patch size, so one model's memory does not count towards the next:

- train forward, and train forward + backward (a squared-logit loss on every output plus the auxiliary
  loss where the family has one; no optimizer step), the fastest of `--steps` after `--warmup` steps
  (the fastest, not the median: on a shared machine the other runs measure the neighbours' load);
- eval forward under `torch.inference_mode`;
- peak memory: on CUDA `torch.cuda.max_memory_allocated` above what model and input held before the first
  step; on CPU the process's peak resident set (ru_maxrss) above its resident set before the first step,
  which counts allocator caching too, so read it as an upper bound.

Prints a markdown table and writes its section of BENCHMARKS.md (`--no-write` skips that).
Run: .venv/bin/python bench/models.py --patch 64 --dims 3 [--batch 1] [--device auto] [--models a,b]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from report import write_section  # bench/report.py (scripts run from bench/ on sys.path)

DEFAULT_MODELS = (
    "agunet,agunet:gate=None,daunet,msga,monai.unet,monai.attention_unet,monai.swin_unetr,hbformer,ratunet"
)


def _resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_model(text: str) -> tuple[str, dict]:
    """'agunet:gate=None;base_channels=8' -> ("agunet", {"gate": None, "base_channels": 8})."""
    name, _, options = text.partition(":")
    parsed = {}
    for item in filter(None, options.split(";")):
        key, _, value = item.partition("=")
        try:
            parsed[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed[key.strip()] = value.strip()
    return name.strip(), parsed


def measure(label: str, args: argparse.Namespace) -> dict:
    """Time and measure one model in this process; returns one table row as a dict."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from medattn.models import create, describe

    name, options = parse_model(label)
    if args.threads:
        torch.set_num_threads(args.threads)

    automatic = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(automatic if args.device == "auto" else args.device)
    patch = (args.patch,) * args.dims
    if "img_size" in describe(name).accepted_options():
        options.setdefault("img_size", patch)
    torch.manual_seed(0)
    model = create(name, args.dims, args.in_channels, args.out_channels, **options).to(device)
    x = torch.randn(args.batch, args.in_channels, *patch, device=device)
    use_amp = device.type == "cuda" and args.amp == "bf16"

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step() -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        sync()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(x)
            outputs = out if isinstance(out, list) else [out]
            loss = sum(o.float().square().mean() for o in outputs)
            auxiliary = model.auxiliary_loss()
            if auxiliary is not None:
                loss = loss + auxiliary
        sync()
        forward = time.perf_counter() - start
        loss.backward()
        sync()
        return forward, time.perf_counter() - start

    model.train()
    with FlopCounterMode(display=False) as counter:
        model(x)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        held_mb = torch.cuda.memory_allocated(device) / 2**20
    else:
        held_mb = _resident_mb()
    times = [train_step() for _ in range(args.warmup + args.steps)][args.warmup :]
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 - held_mb
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - held_mb

    model.eval()
    inference = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
        for step in range(args.warmup + args.steps):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if step >= args.warmup:
                inference.append(time.perf_counter() - start)
    return {
        "model": label,
        "parameters": model.parameter_count(),
        "forward_gflop": counter.get_total_flops() / 1e9,
        "forward_s": min(t[0] for t in times),
        "train_step_s": min(t[1] for t in times),
        "inference_s": min(inference),
        "peak_mb": peak_mb,
        "device": str(device),
    }


def _run_isolated(name: str, argv: list[str]) -> dict:
    """Run `measure` for one model in a fresh interpreter so its peak memory is its own."""
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"model": name, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(rows: list[dict]) -> str:
    reference = next(
        (r["train_step_s"] for r in rows if r["model"] == "monai.unet" and "error" not in r), None
    )
    lines = [
        "| model | params (M) | fwd GFLOP | train fwd (s) | train fwd+bwd (s) | x monai.unet "
        "| eval fwd (s) | peak mem (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} | | | | | | |")
            continue
        ratio = f"{r['train_step_s'] / reference:.2f}" if reference else "-"
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:.2f} | {r['forward_gflop']:.1f} | {r['forward_s']:.3f} "
            f"| {r['train_step_s']:.3f} | {ratio} | {r['inference_s']:.3f} | {r['peak_mb']:.0f} |"
        )
    return "\n".join(lines)


def _machine(device: str, threads: int) -> str:
    import monai
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{_cpu_model()}, {cpus} CPU cores, {threads or torch.get_num_threads()} torch threads"
    if device.startswith("cuda"):
        text += f", GPU {torch.cuda.get_device_name(0)}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{text}; load average {load:.1f} at the start (the machine is shared, so CPU wall times vary); "
        f"torch {torch.__version__}, MONAI {monai.__version__}, Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=64, help="edge of the cubic/square patch, voxels")
    parser.add_argument("--dims", type=int, default=3, choices=(2, 3))
    parser.add_argument("--batch", type=int, default=2, help="2 = the training batch the defaults target")
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--out-channels", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed steps (the fastest is reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 gives steadier CPU times on a shared machine",
    )
    parser.add_argument("--amp", default="bf16", choices=("bf16", "none"), help="autocast on CUDA")
    parser.add_argument(
        "--models",
        default=DEFAULT_MODELS,
        help="comma-separated registry names, each optionally with options: 'agunet:gate=None;depth=3'",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return

    passed = [a for a in sys.argv[1:] if a != "--no-write"]
    started = time.perf_counter()
    machine_device = "cpu"
    rows = []
    for name in args.models.split(","):
        row = _run_isolated(name, passed)
        machine_device = row.get("device", machine_device)
        print(json.dumps(row), flush=True)
        rows.append(row)
    table = _table(rows)
    print(table)
    if args.no_write:
        return
    patch = "x".join([str(args.patch)] * args.dims)
    precision = "bf16 autocast" if machine_device.startswith("cuda") and args.amp == "bf16" else "fp32"
    section = (
        f"Patch {patch}, batch {args.batch}, {args.in_channels} input channel(s), "
        f"{args.out_channels} classes, "
        f"{machine_device} {precision}, default configurations, fastest of {args.steps} steps after "
        f"{args.warmup} warm-up. Peak memory: "
        + (
            "CUDA max allocated above model + input."
            if machine_device.startswith("cuda")
            else "process peak RSS above RSS before the first step (an upper bound)."
        )
        + f"\n\nMachine: {_machine(machine_device, args.threads)}. "
        f"Whole run {time.perf_counter() - started:.0f} s.\n\n"
        f"Command: `.venv/bin/python bench/models.py {' '.join(passed)}`\n\n{table}\n"
    )
    on_cuda = " on CUDA" if machine_device.startswith("cuda") else ""
    batch = f", batch {args.batch}" if args.batch != 2 else ""  # 2: the training batch the defaults target
    write_section(f"## networks{on_cuda}{batch}: `bench/models.py`", section)


if __name__ == "__main__":
    main()
