"""A command's options built from an options dataclass: each field is one option, declared once.

A pipeline's options dataclass (`PredictOptions`, `TrainOptions`) says everything the command line needs
in each field's `metadata`; `with_options` turns the fields into typer options and hands the command the
filled dataclass. The keys of a field's metadata:

- ``help`` (required): the option's help text, plain text (rich markup is escaped here).
- ``flags``: the option's names, e.g. ``("--model", "-m")`` or ``("--pipelined/--no-pipelined",)``.
  Default: ``--field-name``; a bool that defaults to False is a switch (``--field-name`` turns it on),
  one that defaults to True gets ``--field-name/--no-field-name``.
- ``parser``: a function from the text typed to the field's value (``"1,1,3"`` -> ``[1.0, 1.0, 3.0]``);
  its ValueError becomes a usage error that names the flag, so its message reads after the flag
  (``"takes comma-separated numbers"``). The option then takes text.
- ``default_text``: with a parser and a default other than None, the default as typed (``"{}"``); the
  parser must read it back as the default.
- ``cli_type``: the type typer parses when it is not the field's own, e.g. ``Path`` for a field kept as
  text, ``list[str]`` for an option given once per value (``--box A --box B``).
- ``metavar``: the value's name in ``--help`` (``K/N``) where the type's (TEXT) says too little.
- ``show_default``: False to leave the default out of ``--help``.
- ``hidden``: True to leave the option out of ``--help``.

Defaults are the dataclass's; an option not given, or a repeated one given zero times, leaves its field at
the default. Other metadata keys (e.g. ``predictor``) are the pipeline's and are ignored here.

Example:
    >>> @with_options
    ... def predict(inputs: Path = typer.Argument(...), options: PredictOptions = None) -> None:
    ...     run_prediction(inputs, options=options)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable

import typer
from rich.markup import escape

OPTIONS_PARAMETER = "options"


def with_options(command: Callable) -> Callable:
    """A typer command whose parameter `options`, annotated with an options dataclass, is given on the
    command line as one option per field (see the module docstring), in place of that parameter and in the
    fields' order; the command is called with the filled dataclass as `options`."""
    hints = typing.get_type_hints(command)
    options_class = hints[OPTIONS_PARAMETER]
    fields = dataclasses.fields(options_class)
    field_types = typing.get_type_hints(options_class)
    parameters = []
    for parameter in inspect.signature(command).parameters.values():
        if parameter.name == OPTIONS_PARAMETER:
            parameters += [_parameter(field, field_types[field.name]) for field in fields]
        else:
            parameters.append(parameter.replace(annotation=hints[parameter.name]))

    @functools.wraps(command)
    def run(**values):
        given = {field.name: values.pop(field.name) for field in fields}
        return command(**values, options=_filled(options_class, fields, given))

    run.__signature__ = inspect.Signature(parameters)
    run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return run


def _parameter(field: dataclasses.Field, field_type) -> inspect.Parameter:
    meta = field.metadata
    if "help" not in meta:
        raise TypeError(f"{field.name}: an option needs metadata={{'help': ...}} to be on the command line")
    default = _default(field)
    option_type = meta.get("cli_type") or (str if "parser" in meta else _without_none(field_type))
    cli_default = default
    if "parser" in meta and default is not None:  # the option takes text: the default's, parsed back
        if "default_text" not in meta or meta["parser"](meta["default_text"]) != default:
            raise TypeError(
                f"{field.name}: give metadata 'default_text', which the parser reads as the default"
            )
        cli_default = meta["default_text"]
    option = typer.Option(
        cli_default,
        *_flags(field.name, option_type, default, meta),
        help=escape(meta["help"]),
        show_default=meta.get("show_default", True),
        metavar=meta.get("metavar"),
        hidden=meta.get("hidden", False),
    )
    return inspect.Parameter(
        field.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=option_type
    )


def _flags(name: str, option_type, default, meta) -> tuple[str, ...]:
    if "flags" in meta:
        return tuple(meta["flags"])
    if option_type is bool and default is False:
        return (f"--{name.replace('_', '-')}",)
    return ()  # typer's own: --field-name, or --field-name/--no-field-name for a bool


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"{field.name}: a command-line option needs a default")


def _without_none(annotation):
    """`X | None` as X: typer reads a missing option as its default, None included."""
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in arguments:
        rest = [argument for argument in arguments if argument is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _filled(options_class, fields, given: dict):
    """The options dataclass from the values typer parsed: parsers applied, options not given left out."""
    values = {}
    for field in fields:
        value = given[field.name]
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue  # the field's default
        parser = field.metadata.get("parser")
        if parser is not None:
            try:
                value = parser(value)
            except ValueError as error:
                flag = field.metadata.get("flags", (f"--{field.name.replace('_', '-')}",))[0]
                raise typer.BadParameter(f"{flag} {error}") from error
        values[field.name] = value
    return options_class(**values)
