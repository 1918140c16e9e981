"""Relation and swap pairs of the synthetic pretraining scenes as a ``data.itm_text_negatives`` file.

The second stage of the two-stage pretraining in ``reports/compositional/synthetic/README.md``: for every
pretraining scene of a world, ``--draws`` draws of a ``replace_rel``, a ``swap_obj`` and a ``swap_att`` pair
(the probes' constructions, on training scenes; ``benchmarks/itm_binding.py``), one item per distinct false
caption, written as ``{image: [{"caption": <true>, "negative": <false>}, ...]}``. Pass the file to pretraining
with ``--set data.itm_text_negatives=<path>`` (relative to ``data.root``).

    .venv/bin/python benchmarks/binding_pairs.py --world runs/synthetic/medium-seed0
    # -> runs/synthetic/medium-seed0/binding_pairs.json (outside the world's manifest)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from itm_binding import training_pairs

from albef.data.synthetic.scene import Scene
from albef.fileio import atomic_write_json

SUBSETS = ("replace_rel", "swap_obj", "swap_att")


def binding_pairs(scenes: dict[str, Scene], draws: int, seed: int) -> dict[str, list[dict[str, str]]]:
    """Image path -> one pair per distinct false caption, in the order of first draw; a false caption drawn
    again (from another true caption: the reversed relation of one is the object swap of another) keeps the
    true caption of its last draw."""
    items: dict[str, dict[str, str]] = {}
    for path, true, false in training_pairs(scenes, draws, seed, SUBSETS):
        items.setdefault(path, {})[false] = true
    return {path: [{"caption": t, "negative": f} for f, t in pairs.items()] for path, pairs in items.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world", type=Path, required=True, help="a synthetic world's folder")
    parser.add_argument("--draws", type=int, default=6, help="draws per scene and subset (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="default: <world>/binding_pairs.json")
    args = parser.parse_args()
    raw = json.loads((args.world / "scenes.json").read_text(encoding="utf-8"))
    scenes = {p: Scene.from_json(s) for p, s in raw.items() if p.startswith("images/pretrain/")}
    pairs = binding_pairs(scenes, args.draws, args.seed)
    out = args.out or args.world / "binding_pairs.json"
    atomic_write_json(out, pairs, indent=1)
    print(f"{sum(map(len, pairs.values()))} pairs of {len(pairs)} images -> {out}")


if __name__ == "__main__":
    main()
