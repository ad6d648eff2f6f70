"""`medattn models`: list the networks medattn can build (dimensions, parameter counts, descriptions);
`medattn models load-check FILE`: check a SAM/MedSAM checkpoint against medattn's `sam`."""

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
    file: Path = typer.Argument(..., metavar="FILE", help="A local SAM or MedSAM checkpoint (.pth)."),
    variant: str = typer.Option("vit_b", "--variant", help="SAM size: vit_b, vit_l or vit_h."),
    in_channels: int = typer.Option(3, "--in-channels", help="Image channels of the model (3 for SAM)."),
    limit: int = typer.Option(20, "--limit", help="Keys listed per kind of difference (0: all)."),
) -> None:
    """Check that a SAM/MedSAM checkpoint loads strictly into medattn's `sam` model, without loading it.

    Lists missing keys (in the model, not the file), unexpected keys (in the file, not the model) and shape
    mismatches; a `module.` prefix (multi-GPU MedSAM) is removed first. Exits with 1 if any key differs.
    """
    # Imported here so that `medattn --help` does not load torch.
    from medattn.models.sam.checkpoint import check_checkpoint

    report = check_checkpoint(file, variant=variant, in_channels=in_channels)
    console = Console(soft_wrap=True)  # one key per line, never folded, so the lines can be copied
    console.print(f"{file}: compared with sam variant={variant}, in_channels={in_channels}", highlight=False)
    if report.stripped_prefix:
        console.print("  'module.' prefix removed from every key")
    console.print(f"  {report.matched} tensor(s) match in name and shape")
    shown = limit if limit > 0 else None
    sections = [
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
    if report.ok:
        console.print(f"[green]OK[/]: loads strictly into sam variant {variant}")
        return
    hint = ""
    if report.looks_like and report.looks_like != variant:
        hint = f"; the file looks like {report.looks_like} (--variant {report.looks_like})"
    console.print(f"[red]does not load strictly[/]{hint}", highlight=False)
    raise typer.Exit(1)
