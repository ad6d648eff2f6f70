"""Command-line pieces several benchmarks share."""

from __future__ import annotations

import argparse
import json


def model_option(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as JSON where it parses (numbers, true/false, null), else as a string."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
