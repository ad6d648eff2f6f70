"""Benchmark the deployment formats on CPU: PyTorch eager vs onnxruntime vs TorchScript, same weights.

Two networks, each exported by `medattn.export` (the checks that the export matches PyTorch included):

1. the default ``agunet`` (base 16, depth 4: 8.9 M parameters; random seeded weights, batch norm) on a
   3D patch (default 64^3, the CPU plan's patch budget) in batches of 2 windows;
2. the demo brain package (sample_data/models/brain_mri: agunet base 8, depth 3, patch 48^3) in batches of
   4 windows (predict's default), and also end to end: `medattn.load_model(...).predict` of one sample
   case with ``engine="torch"`` and ``engine="onnx"`` (read excluded; preprocessing, windows, inversion).

Per network: PyTorch eager under ``torch.inference_mode()`` (channels-first, and channels-last-3d as
`sliding_window_predict` runs windows on CPU), the ONNX file in an onnxruntime CPU session
(as many intra-op threads as torch), the TorchScript file (``torch.jit.load``) under inference mode. Timed
interleaved round by round after two warm-up calls each (TorchScript profiles its first calls), so load on
the shared machine hits all alike; best and median of the rounds, and the largest logit difference from
eager. Prints a table and writes its section of BENCHMARKS.md (``--no-write`` skips it).
Run: .venv/bin/python bench/export.py [--rounds 5] [--patch 64 64 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from report import machine as report_machine
from report import write_section  # bench/report.py

REPO = Path(__file__).resolve().parent.parent
BRAIN_PACKAGE = REPO / "sample_data" / "models" / "brain_mri"
BRAIN_CASE = REPO / "sample_data" / "brain_mri" / "imagesTs" / "brain_004_0000.nii.gz"


def default_agunet(patch: list[int]):
    """The default agunet (seeded) with a package config around it, as `medattn train` would save it."""
    from medattn.models import create
    from medattn.package import PackageConfig
    from medattn.plan import Plan

    torch.manual_seed(0)
    network = create("agunet", 3, 1, 2, deep_supervision=False).eval()
    plan = Plan(3, 1, 2, [1.0, 1.0, 1.0], list(patch), 2, "mr", labels={0: "background", 1: "lesion"})
    return network, PackageConfig(model="agunet", model_kwargs={}, plan=plan)


def engines(network, config, folder: Path) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Eager, onnxruntime and TorchScript callables on the same weights (both files exported and checked)."""
    from medattn.export import LogitsOnly, export_onnx, export_torchscript
    from medattn.inference.engines import OnnxEngine

    onnx_path, script_path = folder / "net.onnx", folder / "net.pt"
    export_onnx(network, config, onnx_path)
    export_torchscript(network, config, script_path)
    eager = LogitsOnly(network)
    channels_last = LogitsOnly(copy.deepcopy(network)).to(memory_format=torch.channels_last_3d)
    scripted = torch.jit.load(str(script_path))
    onnx = OnnxEngine(onnx_path)

    def in_inference_mode(module, memory_format=torch.contiguous_format):
        def run(batch):
            with torch.inference_mode():
                return module(batch.contiguous(memory_format=memory_format))

        return run

    return {
        "PyTorch eager": in_inference_mode(eager),
        "PyTorch eager, channels-last-3d": in_inference_mode(channels_last, torch.channels_last_3d),
        "onnxruntime (CPU)": onnx,
        "TorchScript (torch.jit.trace)": in_inference_mode(scripted),
    }


def time_interleaved(
    variants: dict[str, Callable[[], torch.Tensor]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Seconds per call of each variant, round by round after two warm-up calls, and each last output."""
    outputs = {}
    for name, run in variants.items():
        for _ in range(2):
            outputs[name] = run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            outputs[name] = run()
            seconds[name].append(time.perf_counter() - start)
            print(f"round {round_index + 1}: {name}: {seconds[name][-1]:.3f} s", flush=True)
    return seconds, outputs


def table_rows(title: str, seconds: dict[str, list[float]], outputs: dict[str, torch.Tensor]) -> list[str]:
    """Markdown rows: best and median seconds, speed relative to the first variant, max difference."""
    first = next(iter(seconds))
    reference, reference_s = outputs[first], min(seconds[first])
    rows = []
    for name, times in seconds.items():
        best = min(times)
        output = outputs[name]
        if output.is_floating_point():
            diff = f"{(output.float() - reference.float()).abs().max().item():.1e}"
        else:
            diff = f"{(output != reference).sum().item()} voxels differ"
        rows.append(
            f"| {title} | {name} | {best:.3f} | {statistics.median(times):.3f} | {reference_s / best:.2f} | "
            f"{diff} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 64, 64), help="default agunet's patch")
    parser.add_argument("--batch", type=int, default=2, help="windows per call for the default agunet")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime

    import medattn
    from medattn.package import load_package

    machine = report_machine(
        f"{torch.get_num_threads()} threads (torch and onnxruntime)", onnxruntime=onnxruntime.__version__
    )
    rows: list[str] = []
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="medattn-bench-export-") as tmp:
        network, config = default_agunet(list(args.patch))
        batch = torch.randn(args.batch, 1, *args.patch, generator=generator)
        variants = {
            name: (lambda run=run: run(batch)) for name, run in engines(network, config, Path(tmp)).items()
        }
        patch = "x".join(map(str, args.patch))
        rows += table_rows(
            f"default agunet, {args.batch} x {patch}", *time_interleaved(variants, args.rounds)
        )

        network, config = load_package(BRAIN_PACKAGE)
        brain_patch = config.plan.patch_size
        batch = torch.randn(4, 1, *brain_patch, generator=generator)
        (Path(tmp) / "brain").mkdir()
        variants = {
            name: (lambda run=run: run(batch))
            for name, run in engines(network, config, Path(tmp) / "brain").items()
        }
        title = f"demo brain package, 4 x {'x'.join(map(str, brain_patch))}"
        rows += table_rows(title, *time_interleaved(variants, args.rounds))

    predictors = {
        engine: medattn.load_model(BRAIN_PACKAGE, device="cpu", engine=engine) for engine in ("torch", "onnx")
    }
    image = predictors["torch"].load(BRAIN_CASE)
    variants = {
        f"predict, engine {engine}": (lambda p=p: p.predict(image)) for engine, p in predictors.items()
    }
    rows += table_rows(
        f"demo brain package, {BRAIN_CASE.name} end to end",
        *time_interleaved(variants, max(2, args.rounds // 2)),
    )

    header = (
        "| network and input | engine | best s | median s | speed vs first row | max diff vs first row |\n"
        "| --- | --- | ---: | ---: | ---: | ---: |"
    )
    table = "\n".join([header, *rows])
    print(table)
    if args.no_write:
        return
    section = (
        f"`.venv/bin/python bench/export.py --rounds {args.rounds}`. "
        "Forward time per call on CPU of the same weights in PyTorch eager (inference mode), onnxruntime "
        "(CPU provider, ONNX opset 17 from `medattn export`) and TorchScript (`torch.jit.trace`); seeded "
        f"N(0, 1) input; best and median of {args.rounds} interleaved rounds after 2 warm-up calls each. "
        "End-to-end rows: `load_model(...).predict` of one sample case (preprocessing, sliding window with "
        "overlap 0.5 and 4 windows per batch, inversion; read excluded); their diff counts voxels whose "
        "label differs.\n\n"
        f"Machine: {machine}.\n\n{table}\n"
    )
    write_section("## export formats: `bench/export.py`", section)


if __name__ == "__main__":
    main()
