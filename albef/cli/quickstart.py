"""``albef quickstart``: the main job on the embedded synthetic world.

Today it generates (or reuses) the world that every synthetic preset trains on and prints its summary;
pretraining, finetuning, evaluation and the report join this command as they land.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Run the main job on the embedded synthetic world: generate (or reuse) the world the synthetic presets use
and print its summary (files, record counts, chance level of every task). Offline, CPU only.
"""


def register(subparsers: Any) -> None:
    """Add the ``quickstart`` command."""
    parser = subparsers.add_parser(
        "quickstart",
        help="the main job on the embedded synthetic world (offline, CPU)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default="synthetic_pretrain",
        help="synthetic preset or YAML file whose data section names the world (default: synthetic_pretrain)",
    )
    parser.add_argument("--size", choices=["small", "medium"], help="world size (default: the config's)")
    parser.add_argument("--seed", type=int, help="world seed (default: the config's)")
    parser.add_argument("--out", type=Path, help="world directory (default: the config's data.root)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from albef.cli.data import ProgressBars, print_world_summary
    from albef.cli.main import AlbefError
    from albef.config import load_config
    from albef.data.synthetic import DEFAULT_IMAGE_SIZE, SyntheticWorldError, ensure_world, world_matches

    cfg = load_config(args.config)
    size = args.size or cfg.data.synthetic_size
    if size is None:
        raise AlbefError(
            f"config {args.config!r} does not use the synthetic world (data.synthetic_size is unset)"
        )
    seed = cfg.data.synthetic_seed if args.seed is None else args.seed
    root = args.out or Path(cfg.data.root if args.size is None else f"runs/synthetic/{size}-seed{seed}")
    reused = world_matches(root, size, seed, DEFAULT_IMAGE_SIZE)
    bars = ProgressBars()
    try:
        root = ensure_world(root, size, seed, progress=bars)
    except SyntheticWorldError as err:
        raise AlbefError(str(err)) from err
    finally:
        bars.close()
    print_world_summary(root, reused)
    return 0
