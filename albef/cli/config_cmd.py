"""``albef config show``: print a resolved config (preset or file, plus overrides) as YAML."""

from __future__ import annotations

import argparse
from typing import Any


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """The ``--config`` / ``--set`` pair shared by every command that takes a config."""
    parser.add_argument(
        "--config",
        default=default,
        help="a preset name (see 'albef ls configs') or a YAML file; a file may name a preset as 'base:'"
        + (f" (default: {default})" if default else ""),
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one value, e.g. --set optim.lr=1e-4 --set model.vision.image_res=384 "
        "(precedence: --set > file > base preset > defaults); repeatable",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config",
        help="show a resolved configuration as YAML",
        description="Resolve a preset or YAML file plus --set overrides and print every value.",
    )
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    show = actions.add_parser("show", help="print the resolved config")
    add_config_arguments(show, default="synthetic_pretrain")
    show.add_argument("--out", help="also write it to this YAML file")
    show.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    from albef.config import dump_config, load_config, save_config

    cfg = load_config(args.config, args.overrides)
    print(dump_config(cfg), end="")
    if args.out:
        save_config(cfg, args.out)
    return 0
