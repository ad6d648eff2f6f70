"""`medattn models`: list the networks medattn can build (dimensions, parameter counts, descriptions);
`medattn models load-check FILE --model NAME`: check a weights file against a network, key by key."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="List the networks medattn can build: name, 2D/3D, deep supervision, parameters, description.",
    add_completion=False,
)


def _millions(count: int | None) -> str:
    return "-" if count is None else f"{count / 1e6:.2f} M"


@app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    in_channels: int = typer.Option(1, "--in-channels", help="Image channels the parameter counts assume."),
    out_channels: int = typer.Option(
        2, "--out-channels", help="Classes (with background) the counts assume."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List every registered network with its parameter count at the default configuration.

    Names are what `--model NAME` and `medattn.models.create(NAME, ...)` take. Parameter counts are for
    the defaults in 3D and 2D; options such as base_channels or depth change them.
    """
    if ctx.invoked_subcommand is not None:
        return
    # Imported here so that `medattn --help` does not load torch and MONAI.
    from medattn.models import available, default_parameter_count, describe

    rows = []
    with Console(stderr=True).status("counting parameters"):
        for name in available():
            spec = describe(name)
            counts = {
                dims: default_parameter_count(name, dims, in_channels, out_channels)
                if dims in spec.spatial_dims
                else None
                for dims in (3, 2)
            }
            # Families with a frozen part (SAM's encoder): how much of the first count actually trains.
            dims = min(spec.spatial_dims)
            trainable = default_parameter_count(name, dims, in_channels, out_channels, trainable_only=True)
            rows.append(
                {
                    "name": name,
                    "spatial_dims": list(spec.spatial_dims),
                    "deep_supervision": spec.deep_supervision,
                    "parameters_3d": counts[3],
                    "parameters_2d": counts[2],
                    "trainable_parameters": trainable,
                    "frozen_parameters": counts[dims] - trainable,
                    "description": spec.description,
                }
            )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(
        title=f"medattn models ({in_channels} input channel(s), {out_channels} classes)", title_justify="left"
    )
    table.add_column("name", no_wrap=True)
    table.add_column("dims", no_wrap=True)
    table.add_column("deep sup.", no_wrap=True)
    table.add_column("params 3D", justify="right", no_wrap=True)
    table.add_column("params 2D", justify="right", no_wrap=True)
    table.add_column("description", overflow="fold")
    for row in rows:
        table.add_row(
            row["name"],
            "/".join(f"{d}D" for d in row["spatial_dims"]),
            "yes" if row["deep_supervision"] else "-",
            _millions(row["parameters_3d"]),
            _millions(row["parameters_2d"]),
            row["description"],
        )
    Console().print(table)
    for row in rows:
        if row["frozen_parameters"]:
            Console().print(
                f"{row['name']}: trainable {row['trainable_parameters']:,} / frozen "
                f"{row['frozen_parameters']:,} parameters ({min(row['spatial_dims'])}D defaults)",
                highlight=False,
            )


@app.command("load-check")
def load_check(
    file: Path = typer.Argument(
        ...,
        metavar="FILE",
        help="A local weights file: a pretrained backbone (torchvision ResNet, Res2Net, Swin-T), an official "
        "checkpoint (SAM/MedSAM, PraNet-19.pth) or a medattn model.pt.",
    ),
    model: str = typer.Option("sam", "--model", "-m", help="Network to check against (`medattn models`)."),
    model_kwargs: str = typer.Option(
        "{}", "--model-kwargs", help="The network's options as JSON, e.g. '{\"width\": 64}'."
    ),
    dims: int = typer.Option(2, "--dims", help="Spatial dimensions of the network: 2 or 3."),
    variant: str | None = typer.Option(
        None, "--variant", help="SAM size for the SAM family: vit_b, vit_l or vit_h (default: the model's)."
    ),
    in_channels: int = typer.Option(
        3, "--in-channels", help="Image channels of the network (3 for ImageNet and SAM files)."
    ),
    out_channels: int = typer.Option(2, "--out-channels", help="Classes of the network, with background."),
    limit: int = typer.Option(20, "--limit", help="Keys listed per kind of difference (0: all)."),
) -> None:
    """Check that a weights file loads into a medattn network, without loading it.

    The file is compared with the network as a medattn state dict, as a SAM/MedSAM checkpoint (SAM family),
    as the official full checkpoint (pranet) and as the network's pretrained backbone in its official
    layout (`backbone_weights`); the best fit is shown: tensors matched, what was fitted (an RGB stem
    summed for one channel, a bias table resized), unused keys (an ImageNet classifier), and missing,
    unexpected and mis-shaped keys. A `module.` prefix (multi-GPU training) is removed first. Exits with 1
    if any key differs.
    """
    # Imported here so that `medattn --help` does not load torch.
    from medattn.errors import ConfigError
    from medattn.models.backbones import check_file

    try:
        options = json.loads(model_kwargs)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"is not JSON: {error}", param_hint="--model-kwargs") from error
    if not isinstance(options, dict):
        raise typer.BadParameter("takes a JSON object, e.g. '{\"width\": 64}'", param_hint="--model-kwargs")
    if variant is not None:
        options["variant"] = variant
    if dims not in (2, 3):
        raise ConfigError(f"--dims takes 2 or 3, got {dims}")
    match = check_file(file, model, dims, in_channels, out_channels, **options)
    report = match.report
    console = Console(soft_wrap=True)  # one key per line, never folded, so the lines can be copied
    shown_options = ", ".join(f"{k}={v!r}" for k, v in options.items())
    console.print(
        f"{file}: compared with {model} ({dims}D, in_channels={in_channels}, out_channels={out_channels}"
        f"{', ' + shown_options if shown_options else ''}) as: {match.layout}",
        highlight=False,
        markup=False,
    )
    if report.stripped_prefix:
        console.print("  'module.' prefix removed from every key")
    console.print(f"  {report.matched} tensor(s) match in name and shape")
    for note in report.adapted:
        console.print(f"  fitted: {note}", highlight=False, markup=False)
    shown = limit if limit > 0 else None
    sections = [
        ("unused (in the file, a part the network lacks on purpose)", report.unused),
        ("missing (in the model, not in the file)", report.missing),
        ("unexpected (in the file, not in the model)", report.unexpected),
        (
            "shape mismatches (file vs model)",
            [f"{key}: {tuple(a)} vs {tuple(b)}" for key, a, b in report.mismatched],
        ),
    ]
    for title, keys in sections:
        if not keys:
            continue
        console.print(f"  {len(keys)} {title}:", highlight=False)
        for key in keys[:shown]:
            console.print(f"    {key}", highlight=False, markup=False)
        if shown is not None and len(keys) > shown:
            console.print(f"    ... and {len(keys) - shown} more (--limit 0 lists all)")
    if report.ok and report.matched:
        console.print(f"[green]OK[/]: loads strictly into {model} as {match.layout}", highlight=False)
        return
    hint = ""
    if report.looks_like and report.looks_like != options.get("variant", "vit_b"):
        hint = f"; the file looks like {report.looks_like} (--variant {report.looks_like})"
    console.print(f"[red]does not load strictly[/]{hint}", highlight=False)
    raise typer.Exit(1)
