"""What the image encoder knows about each object of the synthetic world: linear probes on its tokens.

The compositional probes ask whether ITM binds a colour to a shape and orders a relation; that needs image
tokens from which an object's shape and position can be read. This study reads them directly. For every object
of the first ``--images`` pretraining scenes (``scenes.json`` holds their ground truth), it takes the image
encoder's output tokens of the object's grid cell (the mean of the patches centred in it) and fits a multinomial logistic regression
(scikit-learn, a dev dependency) for each attribute: shape (6), colour (8), size (2), row and column (3 each);
the first three quarters of the images train it, the rest test it. Measured in one run for each checkpoint and
for the same architecture at its random initialisation (``torch.manual_seed(0)``), the baseline that tells
learnt features from what random projections of the pixels already carry. ``majority`` is the share of the most
frequent class in the test objects.

    .venv/bin/python benchmarks/probe_features.py --checkpoint pretrain=runs/quickstart/pretrain/checkpoints/step-00001240.pt
    # -> reports/compositional/synthetic/features.{json,md}
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_study
from sklearn.linear_model import LogisticRegression
from tabulate import tabulate

from albef.checkpoint.convert import load_checkpoint
from albef.config import ExperimentConfig
from albef.config.io import from_dict
from albef.data.images import load_image
from albef.data.synthetic.scene import Scene
from albef.data.transforms import build_test_transform
from albef.models import create_model
from albef.reporting.environment import git_revision

REPO_ROOT = Path(__file__).resolve().parents[1]
ATTRIBUTES = ("shape", "color", "size", "row", "col")
GRID = 3
"""The synthetic world's scenes are a 3 x 3 grid of cells, one object at most per cell."""


def cell_patches(cell: int, side: int) -> slice:
    """The patch rows (or columns) whose centres fall inside grid row (or column) ``cell``."""
    centres = [(i + 0.5) / side * GRID for i in range(side)]
    inside = [i for i, x in enumerate(centres) if cell <= x < cell + 1]
    return slice(inside[0], inside[-1] + 1)


def object_tokens(
    model: torch.nn.Module, cfg: ExperimentConfig, world: Path, scenes: dict[str, Scene]
) -> tuple[np.ndarray, dict[str, list[Any]], list[int]]:
    """``(tokens (N, D), attribute -> N labels, image index of each object)`` over the scenes' objects."""
    vision = cfg.model.vision
    side = vision.image_res // vision.patch_size
    transform = build_test_transform(vision.image_res)
    tokens: list[np.ndarray] = []
    labels: dict[str, list[Any]] = {name: [] for name in ATTRIBUTES}
    owners: list[int] = []
    paths = list(scenes)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(paths), 64):
            batch = paths[start : start + 64]
            images = torch.stack([transform(load_image(world / path)) for path in batch])
            embeds = model.encode_image(images).embeds  # type: ignore[operator]
            for row, path in enumerate(batch):
                grid = embeds[row, 1:].float().reshape(side, side, -1)
                for obj in scenes[path].objects:
                    tokens.append(
                        grid[cell_patches(obj.row, side)][:, cell_patches(obj.col, side)].mean((0, 1)).numpy()
                    )
                    for name in ATTRIBUTES:
                        labels[name].append(getattr(obj, name))
                    owners.append(start + row)
    return np.stack(tokens), labels, owners


def probe(
    tokens: np.ndarray, labels: dict[str, list[Any]], owners: list[int], n_images: int
) -> dict[str, Any]:
    """Held-out accuracy (%) of each attribute's linear probe, and the majority share of its test labels."""
    train = np.array(owners) < n_images * 3 // 4
    out: dict[str, Any] = {}
    for name in ATTRIBUTES:
        y = np.array(labels[name])
        fitted = LogisticRegression(max_iter=3000).fit(tokens[train], y[train])
        majority = Counter(y[~train]).most_common(1)[0][1] / int((~train).sum())
        out[name] = {
            "accuracy": round(100 * float(fitted.score(tokens[~train], y[~train])), 1),
            "majority": round(100 * majority, 1),
        }
    return out


def probe_model(
    task: str, cfg: ExperimentConfig, state: dict[str, Any] | None, world: Path, scenes: dict[str, Scene]
) -> dict[str, Any]:
    """:func:`probe` of the ``task`` model of ``cfg`` with the checkpoint ``state``, or at its random
    initialisation (``torch.manual_seed(0)``) when ``state`` is ``None``."""
    torch.manual_seed(0)
    model = create_model(task, cfg.model)
    if state is not None:
        load_checkpoint(model, task, state)
    return probe(*object_tokens(model, cfg, world, scenes), n_images=len(scenes))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH", required=True,
                        help="a pretraining or retrieval checkpoint of the synthetic world (repeatable)")  # fmt: skip
    parser.add_argument("--world", type=Path, default=REPO_ROOT / "runs" / "synthetic" / "medium-seed0")
    parser.add_argument("--images", type=int, default=1200, help="pretraining scenes probed (default 1200)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "compositional" / "synthetic")
    args = parser.parse_args()
    raw = json.loads((args.world / "scenes.json").read_text(encoding="utf-8"))
    paths = [path for path in raw if path.startswith("images/pretrain/")][: args.images]
    scenes = {path: Scene.from_json(raw[path]) for path in paths}

    rows, results = [], {}
    at_init: dict[str, dict[str, Any]] = {}  # model config -> probes of its random init (probed once)
    for spec in args.checkpoint:
        name, _, path = spec.partition("=")
        state = torch.load(path, map_location="cpu", weights_only=False)
        cfg = from_dict(ExperimentConfig, state["config"], source=path)
        task = "retrieval" if cfg.task == "retrieval" else "pretrain"
        key = json.dumps([task, state["config"]["model"]], sort_keys=True)
        if key not in at_init:
            at_init[key] = probe_model(task, cfg, None, args.world, scenes)
        for label, load in ((f"{name} (random init)", False), (name, True)):
            found = probe_model(task, cfg, state, args.world, scenes) if load else at_init[key]
            results[label] = {"checkpoint": path if load else None, "probes": found}
            rows.append(
                [label] + [f"{found[a]['accuracy']:.1f} ({found[a]['majority']:.1f})" for a in ATTRIBUTES]
            )
            print(tabulate([rows[-1]], headers=["model", *ATTRIBUTES]), flush=True)

    table = tabulate(rows, headers=["model", *ATTRIBUTES], tablefmt="github")
    report = {"git": git_revision(), "world": str(args.world.name), "images": len(paths), "results": results}
    write_study(
        args.out, "features", report,
        "Linear probes of the image tokens: held-out accuracy % (majority class %)",
        f"git {report['git']}, {len(paths)} pretraining scenes of {args.world.name}, `benchmarks/probe_features.py`.",
        table,
    )  # fmt: skip
    print(table)


if __name__ == "__main__":
    main()
