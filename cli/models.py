"""`medattn models`: list the networks medattn can build, with dimensions, parameter counts, descriptions."""

from __future__ import annotations

import json

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
            rows.append(
                {
                    "name": name,
                    "spatial_dims": list(spec.spatial_dims),
                    "deep_supervision": spec.deep_supervision,
                    "parameters_3d": counts[3],
                    "parameters_2d": counts[2],
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
