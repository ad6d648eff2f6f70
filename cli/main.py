"""Entry point of the `medattn` console script: the typer app, global options, errors -> exit codes."""

from __future__ import annotations

import inspect
import sys
import warnings

import typer
from rich.console import Console
from rich.markup import escape

from medattn import __version__
from medattn.errors import MedattnError

app = typer.Typer(
    name="medattn",
    help="Medical image segmentation with attention U-Nets: scans in, Slicer-ready masks out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medattn {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback when something fails."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Medical image segmentation with attention U-Nets: scans in, Slicer-ready masks out."""
    _state["debug"] = debug


def _register_commands() -> None:
    """Each command lives in its own cli module; importing them here keeps this file free of logic."""
    from medattn.cli import demo, evaluate, export, info, models, predict, track, train

    app.command("info")(info.info)
    app.command("train")(train.train)
    app.command("predict")(predict.predict)
    app.command("evaluate")(evaluate.evaluate)
    app.add_typer(models.app, name="models")
    app.command("demo")(demo.demo)
    app.command("export")(export.export)
    app.command("track")(track.track)
    # Other commands register here, one line each: app.command("NAME")(module.function)
    for typer_app in (app, models.app):
        for command in typer_app.registered_commands:
            if command.help is None and command.callback is not None:
                command.help = unwrapped_help(command.callback.__doc__)


def unwrapped_help(docstring: str | None) -> str:
    """A command's docstring with each paragraph on one line (list items, "- ...", on a line each).

    typer's rich help joins the lines of the first paragraph only; later paragraphs kept the docstring's
    110-column line breaks and showed as ragged half-lines on an 80-column terminal.
    """
    paragraphs = []
    for paragraph in inspect.cleandoc(docstring or "").split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.lstrip().startswith(("- ", "* ")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.strip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


_register_commands()


def _show_input_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings about the user's inputs (medattn's InputWarning, and other UserWarnings such as a reader's)
    as one yellow line naming the file, not Python's source-line format; others as Python shows them."""
    if not issubclass(category, UserWarning) or issubclass(category, DeprecationWarning):
        _python_showwarning(message, category, filename, lineno, file, line)
        return
    Console(stderr=True).print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


_python_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a MedattnError becomes one red line on stderr and exit code 1 (traceback with --debug)."""
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    warnings.showwarning = _show_input_warning
    try:
        app(args=args, standalone_mode=True)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except MedattnError as error:
        if _state["debug"]:
            raise
        # Escaped: messages hold brackets ("pip install 'medattn[onnx]'", shapes) that rich reads as markup.
        message = escape(str(error))
        Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]")
        return 130
    except Exception as error:  # a bug of ours, not the user's input: still one line, traceback on request
        if _state["debug"]:
            raise
        Console(stderr=True).print(
            f"[bold red]internal error:[/] {type(error).__name__}: {escape(str(error))} "
            "(run again with --debug for the traceback, and please report it)",
            highlight=False,
            soft_wrap=True,
        )
        return 2
    finally:
        warnings.showwarning = _python_showwarning
    return 0


if __name__ == "__main__":
    sys.exit(main())
