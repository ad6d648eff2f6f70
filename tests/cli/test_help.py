"""Command help: paragraphs flow as paragraphs on any terminal width, not as the docstring's line breaks."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from medattn.cli.main import app, unwrapped_help


def test_paragraphs_are_joined_and_list_items_kept():
    doc = """First line
    goes on.

    Second paragraph
        continues here.

    - item one
      wraps
    - item two
    """
    assert unwrapped_help(doc) == (
        "First line goes on.\n\nSecond paragraph continues here.\n\n- item one wraps\n- item two"
    )


def test_later_paragraphs_of_a_command_help_are_not_broken_mid_sentence():
    """`medattn evaluate --help` on a wide terminal: the last paragraph of the docstring (two source lines)
    prints as one line, as it fits, not split where the source line breaks (after "the others")."""
    result = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    lines = [re.sub(r"\s+", " ", line).strip() for line in result.output.splitlines()]
    assert any(
        line.startswith("A case that cannot be scored") and line.endswith("on any error.") for line in lines
    )
