"""A task's own options (:class:`albef.tasks.Option`, plain data) as ``argparse`` arguments, and back."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from albef.tasks import Option


def described_parser(subparsers: Any, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` keeps the line breaks of its description."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """One argument per option."""
    for option in options:
        kwargs: dict[str, Any] = {"dest": option.dest, "help": option.help}
        if option.switch:
            parser.add_argument(option.flag, action="store_true", **kwargs)
            continue
        kwargs.update(default=option.default, metavar=option.metavar)
        if option.type is not None:
            kwargs["type"] = option.type
        if option.choices is not None:
            kwargs["choices"] = option.choices
        parser.add_argument(option.flag, **kwargs)


def option_values(args: argparse.Namespace, options: Iterable[Option]) -> dict[str, Any]:
    """The parsed values of ``options`` by :attr:`Option.dest`."""
    return {option.dest: getattr(args, option.dest) for option in options}


def option_overrides(args: argparse.Namespace, options: Iterable[Option]) -> list[str]:
    """The config overrides the switches that were given stand for."""
    return [o.override for o in options if o.switch and o.override and getattr(args, o.dest)]
