"""Can ITM learn to bind and order at all? ITM-only training on the synthetic world's relation pairs.

The compositional probes put every quickstart-size checkpoint at chance on the swaps (``README.md`` next to the
reports). This study separates the two suspects, the fusion encoder and the image tokens it reads, by
training the ITM loss alone on pairs that only binding decides, from a pretraining checkpoint, under three
image encoders, in one run:

- ``checkpoint``: the checkpoint as it is;
- ``position x K``: the same, with the ViT's position embeddings rescaled to std ``--pos-std`` first (timm's
  0.02 init is about 12x weaker than a patch's content at this size, and pretraining leaves it there);
- ``oracle tokens``: the ViT replaced by ideal tokens built from ``scenes.json``: each patch is a fixed random
  position vector plus the colour and shape vectors of the object whose grid cell it lies in. The text
  encoder and fusion layers are the checkpoint's.

Training pairs: for every pretraining scene, ``--draws`` draws of a ``replace_rel`` and a ``swap_obj`` pair
(the constructions of the probes, on training scenes; duplicates kept). One step: ``--batch`` pairs, the ITM
cross-entropy of the true caption (label 1) and its negative (label 0) with the image. Measured every
``--eval-every`` steps: pair accuracy (the true caption's match logit above the negative's) on 512 training
pairs and on the held-out probe subsets ``replace_rel``, ``swap_obj`` and ``swap_att`` (never trained on),
with 95 % bootstrap intervals at the end.

    .venv/bin/python benchmarks/itm_binding.py --checkpoint runs/quickstart/pretrain/checkpoints/step-00001240.pt
    # -> reports/compositional/synthetic/binding.{json,md}
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import arguments, write_study
from tabulate import tabulate
from torch import Tensor

from albef.checkpoint.convert import load_checkpoint
from albef.config import ExperimentConfig
from albef.config.io import from_dict
from albef.data.images import load_image
from albef.data.synthetic.probes import sugarcrepe_negative
from albef.data.synthetic.render import COLOR_RGB
from albef.data.synthetic.scene import GRID, Scene
from albef.data.tokenizer import TextTokenizer, load_tokenizer
from albef.data.transforms import build_test_transform
from albef.evaluation.bootstrap import percent_metric
from albef.models import create_model
from albef.reporting.environment import git_revision

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINED = ("replace_rel", "swap_obj")
PROBED = ("replace_rel", "swap_obj", "swap_att")
ORACLE_SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
"""The world's shapes in the order the oracle draws their vectors (kept, so the committed report reproduces)."""
Pairs = tuple[Tensor, list[str], list[str]]
"""Images (or oracle tokens) of N pairs, their true captions, their negatives."""


class OracleTokens:
    """Ideal image tokens (module docstring): fixed random vectors, one per position, colour and shape."""

    def __init__(self, side: int, width: int, seed: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.side = side
        self.position = torch.randn(side * side, width, generator=g)
        self.background = torch.randn(width, generator=g)
        self.color = {name: torch.randn(width, generator=g) for name in COLOR_RGB}
        self.shape = {name: torch.randn(width, generator=g) for name in ORACLE_SHAPES}

    def __call__(self, scene: Scene) -> Tensor:
        """(1 + side**2, width): a zero [CLS] token, then the patches row by row."""
        patches = self.position + self.background
        per_cell = self.side // GRID
        for obj in scene.objects:
            content = self.color[obj.color] + self.shape[obj.shape] - self.background
            for r in range(obj.row * per_cell, (obj.row + 1) * per_cell):
                for c in range(obj.col * per_cell, (obj.col + 1) * per_cell):
                    patches[r * self.side + c] += content
        return torch.cat([torch.zeros(1, patches.shape[1]), patches])


def training_pairs(scenes: dict[str, Scene], draws: int, seed: int) -> list[tuple[str, str, str]]:
    """``(image path, true caption, negative)`` drawn from every pretraining scene."""
    rng = random.Random(seed)
    pairs = []
    for path, scene in scenes.items():
        for _ in range(draws):
            for subset in TRAINED:
                made = sugarcrepe_negative(scene, subset, rng)
                if made is not None:
                    pairs.append((path, *made))
    return pairs


def itm_logits(
    model: Any, tokenizer: TextTokenizer, inputs: Tensor, texts: list[str], oracle: bool
) -> Tensor:
    """ITM logits (N, 2) of each (input, text): ``inputs`` are images, or image tokens when ``oracle``."""
    tokens = tokenizer.encode(texts, max_length=30)
    text = model.encode_text(tokens.input_ids, tokens.attention_mask)
    embeds = inputs if oracle else model.encode_image(inputs).embeds
    logits: Tensor = model.itm_logits(model.fuse(text, embeds))
    return logits


def itm_margin(
    model: Any, tokenizer: TextTokenizer, inputs: Tensor, texts: list[str], oracle: bool
) -> Tensor:
    """Match minus no-match logit of each (input, text)."""
    logits = itm_logits(model, tokenizer, inputs, texts, oracle)
    return logits[:, 1] - logits[:, 0]


def pair_outcomes(model: Any, tokenizer: TextTokenizer, pairs: Pairs, oracle: bool) -> Tensor:
    """1 where the true caption's margin beats the negative's, per pair."""
    inputs, true, false = pairs
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(true), 128):
            chunk = slice(i, i + 128)
            pos = itm_margin(model, tokenizer, inputs[chunk], true[chunk], oracle)
            neg = itm_margin(model, tokenizer, inputs[chunk], false[chunk], oracle)
            out.append((pos > neg).double())
    model.train()
    return torch.cat(out)


def position_scale(state: dict[str, Any], cfg: ExperimentConfig, images: Tensor) -> dict[str, float]:
    """Std of the checkpoint's position embeddings against that of its patch embeddings of ``images``:
    the two are summed into the ViT's first tokens."""
    model: Any = create_model("pretrain", cfg.model)
    load_checkpoint(model, "pretrain", state)
    vit = model.visual_encoder
    with torch.no_grad():
        patches = vit.patch_embed(images[:256])
        return {"pos_embed_std": float(vit.pos_embed[0, 1:].std()), "patch_std": float(patches.std())}


def run_variant(
    name: str, state: dict[str, Any], cfg: ExperimentConfig, tokenizer: TextTokenizer,
    train: list[tuple[int, str, str]], inputs: Tensor, probes: dict[str, Pairs], args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """Train one variant from the checkpoint and return its accuracy curve and final probe metrics."""
    torch.manual_seed(args.seed)
    model: Any = create_model("pretrain", cfg.model)
    load_checkpoint(model, "pretrain", state)
    oracle = name == "oracle tokens"
    if name.startswith("position"):
        with torch.no_grad():
            pos = model.visual_encoder.pos_embed
            pos.mul_(args.pos_std / float(pos.std()))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.02)
    rng = random.Random(args.seed)
    watched = rng.sample(train, min(512, len(train)))
    watch: Pairs = (inputs[[p[0] for p in watched]], [p[1] for p in watched], [p[2] for p in watched])
    curve, started = [], time.perf_counter()
    outcomes: dict[str, Tensor] = {}
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            outcomes = {
                subset: pair_outcomes(model, tokenizer, pairs, oracle) for subset, pairs in probes.items()
            }
            point = {
                "step": step,
                "train": round(100 * float(pair_outcomes(model, tokenizer, watch, oracle).mean()), 1),
                **{subset: round(100 * float(hits.mean()), 1) for subset, hits in outcomes.items()},
                "seconds": round(time.perf_counter() - started, 1),
            }
            curve.append(point)
            print(f"{name}: {point}", flush=True)
        if step == args.steps:
            break
        batch = rng.sample(train, args.batch)
        images = inputs[[p[0] for p in batch]]
        texts = [p[1] for p in batch] + [p[2] for p in batch]
        logits = itm_logits(model, tokenizer, torch.cat([images, images]), texts, oracle)
        labels = torch.cat([torch.ones(args.batch), torch.zeros(args.batch)]).long()
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    final = {}
    for subset, hits in outcomes.items():  # the last step's
        metric = percent_metric(hits)
        final[subset] = {
            "accuracy": round(metric.value, 1),
            "ci": [round(metric.ci_low or 0, 1), round(metric.ci_high or 0, 1)],
            "n": metric.n,
        }
    return {"curve": curve, "final": final}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a synthetic pretraining checkpoint")
    parser.add_argument("--world", type=Path, default=REPO_ROOT / "runs" / "synthetic" / "medium-seed0")
    parser.add_argument("--steps", type=int, default=750, help="ITM steps per variant (default 750)")
    parser.add_argument("--batch", type=int, default=64, help="pairs per step (default 64)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    parser.add_argument("--draws", type=int, default=6, help="draws per scene and subset (default 6)")
    parser.add_argument("--pos-std", type=float, default=0.25, help="rescaled position std (default 0.25)")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "compositional" / "synthetic")
    args = parser.parse_args()

    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    cfg = from_dict(ExperimentConfig, state["config"], source=str(args.checkpoint))
    tokenizer = load_tokenizer(cfg.data.tokenizer, root=args.world)
    transform = build_test_transform(cfg.model.vision.image_res)
    raw = json.loads((args.world / "scenes.json").read_text(encoding="utf-8"))
    scenes = {p: Scene.from_json(s) for p, s in raw.items() if p.startswith("images/pretrain/")}
    paths = sorted(scenes)
    index = {p: i for i, p in enumerate(paths)}
    train = [(index[p], t, f) for p, t, f in training_pairs(scenes, args.draws, args.seed)]
    vision = cfg.model.vision
    oracle_tokens = OracleTokens(vision.image_res // vision.patch_size, vision.width)

    images = torch.stack([transform(load_image(args.world / p)) for p in paths])
    oracle_inputs = torch.stack([oracle_tokens(scenes[p]) for p in paths])
    probes: dict[str, Pairs] = {}
    oracle_probes: dict[str, Pairs] = {}
    for subset in PROBED:
        data = json.loads(
            (args.world / "probes" / "sugarcrepe" / f"{subset}.json").read_text(encoding="utf-8")
        )
        files = [f"images/probes/sugarcrepe/{ex['filename']}" for ex in data.values()]
        true = [ex["caption"] for ex in data.values()]
        false = [ex["negative_caption"] for ex in data.values()]
        probes[subset] = (torch.stack([transform(load_image(args.world / f)) for f in files]), true, false)
        oracle_probes[subset] = (
            torch.stack([oracle_tokens(Scene.from_json(raw[f])) for f in files]),
            true,
            false,
        )

    scale = position_scale(state, cfg, images)
    print(f"position embeddings std {scale['pos_embed_std']:.4f}, patch content std {scale['patch_std']:.4f}")
    variants = ("checkpoint", f"position x {args.pos_std / 0.02:g}", "oracle tokens")
    results = {}
    for name in variants:
        oracle = name == "oracle tokens"
        results[name] = run_variant(
            name, state, cfg, tokenizer, train, oracle_inputs if oracle else images,
            oracle_probes if oracle else probes, args,
        )  # fmt: skip

    rows = [
        [name]
        + [
            f"{r['final'][s]['accuracy']:.1f} ± {(r['final'][s]['ci'][1] - r['final'][s]['ci'][0]) / 2:.1f}"
            for s in PROBED
        ]
        + [r["curve"][-1]["train"]]
        for name, r in results.items()
    ]
    table = tabulate(rows, headers=["image tokens", *PROBED, "train pairs"], tablefmt="github")
    report = {
        "git": git_revision(), "checkpoint": str(args.checkpoint), "world": args.world.name,
        "training_pairs": len(train), "scale": scale, "settings": arguments(args), "results": results,
    }  # fmt: skip
    write_study(
        args.out, "binding", report,
        "ITM-only training on relation pairs: held-out probe pair accuracy % (95 % interval)",
        f"git {report['git']}, {len(train)} training pairs from the pretraining scenes of {args.world.name}, "
        f"{args.steps} steps of {args.batch} pairs at lr {args.lr:g}, `benchmarks/itm_binding.py`. Chance 50 %; "
        "`swap_att` is never trained on. The checkpoint's position embeddings have std "
        f"{scale['pos_embed_std']:.3f}, its patch embeddings of the pretraining images {scale['patch_std']:.3f}.",
        table,
    )  # fmt: skip
    print(table)


if __name__ == "__main__":
    main()
