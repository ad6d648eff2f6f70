"""Command options built from an options dataclass: flags, help, defaults, parsers, and the filled object."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medattn.cli.main import app
from medattn.cli.options import with_options
from medattn.pipelines.predict_options import PredictOptions
from medattn.pipelines.train_options import TrainOptions


def _sizes(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError as error:
        raise ValueError("takes comma-separated whole numbers") from error


@dataclass
class Example:
    size: int = field(default=4, metadata={"help": "Windows per pass.", "flags": ("--sw", "-s")})
    sizes: list[int] | None = field(default=None, metadata={"help": "Sizes, e.g. 1,2.", "parser": _sizes})
    table: list[int] = field(
        default_factory=lambda: [1, 2], metadata={"help": "Table.", "parser": _sizes, "default_text": "1,2"}
    )
    box: list | None = field(default=None, metadata={"help": "A box; repeatable.", "cli_type": list[str]})
    mask: str | None = field(default=None, metadata={"help": "A mask file.", "cli_type": Path})
    fast: bool = field(default=False, metadata={"help": "Go fast."})
    checks: bool = field(default=True, metadata={"help": "Check [inputs]."})
    secret: int = field(default=0, metadata={"help": "Not shown.", "hidden": True})


def _app(seen: list) -> typer.Typer:
    example_app = typer.Typer(add_completion=False)

    @example_app.command()
    @with_options
    def run(name: str = typer.Argument(..., help="A name."), options: Example = None) -> None:
        """Run the example."""
        seen.append((name, options))

    return example_app


def test_each_field_becomes_an_option_and_the_command_gets_the_filled_dataclass():
    seen = []
    runner = CliRunner()
    result = runner.invoke(_app(seen), ["a"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == ("a", Example())
    args = ["b", "-s", "2", "--sizes", "3,4", "--box", "1,2,3,4", "--box", "5,6,7,8", "--mask", "m.nii"]
    result = runner.invoke(_app(seen), [*args, "--fast", "--no-checks", "--secret", "7", "--table", "9"])
    assert result.exit_code == 0, result.output
    expected = Example(2, [3, 4], [9], ["1,2,3,4", "5,6,7,8"], Path("m.nii"), True, False, 7)
    assert seen[-1] == ("b", expected)


def test_help_shows_flags_defaults_and_help_text_as_written():
    result = CliRunner().invoke(_app([]), ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    lines = {
        line.split()[1]: re.sub(r"\s+", " ", line) for line in result.output.splitlines() if "--" in line
    }
    assert "-s" in lines["--sw"] and "[default: 4]" in lines["--sw"]
    assert "--no-checks" in lines["--checks"] and "Check [inputs]." in lines["--checks"]  # markup escaped
    assert "[default: 1,2]" in lines["--table"] and "[default" not in lines["--sizes"]
    assert "--no-fast" not in result.output and "--secret" not in result.output


def test_a_value_the_parser_refuses_is_a_usage_error_naming_the_flag():
    result = CliRunner().invoke(_app([]), ["a", "--sizes", "1,x"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "--sizes takes comma-separated whole numbers" in result.output


def test_an_option_without_help_or_a_readable_default_is_refused_when_the_command_is_built():
    @dataclass
    class NoHelp:
        size: int = 4

    @dataclass
    class NoDefaultText:
        table: list[int] = field(default_factory=lambda: [1], metadata={"help": "Table.", "parser": _sizes})

    for options_class in (NoHelp, NoDefaultText):

        def command(options: options_class = None) -> None: ...

        command.__annotations__ = {"options": options_class, "return": None}
        with pytest.raises(TypeError, match="metadata"):
            with_options(command)


@pytest.mark.parametrize(("command", "options_class"), [("predict", PredictOptions), ("train", TrainOptions)])
def test_help_lists_every_option_with_its_help(command, options_class):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    # Rich wraps a long help over several rows of its table: drop the borders, then join the words.
    text = re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", result.output))
    for option in dataclasses.fields(options_class):
        flag = option.metadata.get("flags", (f"--{option.name.replace('_', '-')}",))[0].split("/")[0]
        assert flag in text, option.name
        assert option.metadata["help"] in text, option.name


def test_predict_command_passes_the_options_object_on(monkeypatch, tmp_path):
    import medattn.pipelines.predict as pipeline

    seen = {}

    def fake_predict(inputs, output, model, *, options, on_case, on_frames):
        seen.update(inputs=inputs, model=model, options=options)
        return []

    monkeypatch.setattr(pipeline, "predict", fake_predict)
    args = ["predict", "in", str(tmp_path / "out"), "-m", "pkg", "--sw-batch", "2", "--format", ".NRRD"]
    result = CliRunner().invoke(app, [*args, "--box", "1,2,3,4", "--prior-mask", "m.nii.gz", "--tta"])
    assert result.exit_code == 0, result.output
    expected = PredictOptions(
        format="nrrd", sw_batch_size=2, tta=True, box=["1,2,3,4"], prior_mask="m.nii.gz"
    )
    assert seen == {"inputs": Path("in"), "model": [Path("pkg")], "options": expected}
    assert expected.predictor_settings()["sw_batch_size"] == 2 and "box" not in expected.predictor_settings()
