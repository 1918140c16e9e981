"""``benchmarks/itm_binding.py``: the oracle image tokens and the training pairs it builds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from albef.data.synthetic.scene import COLORS, SHAPES, Scene, SceneObject

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def binding() -> ModuleType:
    if str(REPO_ROOT / "benchmarks") not in sys.path:  # the script imports its neighbour _common
        sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("itm_binding", REPO_ROOT / "benchmarks" / "itm_binding.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["itm_binding"] = module
    spec.loader.exec_module(module)
    return module


def _obj(shape: str, color: str, row: int, col: int) -> SceneObject:
    return SceneObject(shape=shape, color=color, size="large", row=row, col=col, dx=0.0, dy=0.0)


def test_oracle_tokens_put_each_object_on_the_patches_of_its_cell(binding: ModuleType) -> None:
    oracle = binding.OracleTokens(side=6, width=16)
    assert sorted(oracle.shape) == sorted(SHAPES) and sorted(oracle.color) == sorted(COLORS)
    scene = Scene((_obj("circle", "red", 0, 2), _obj("star", "blue", 2, 0)), background=0)
    tokens = oracle(scene)
    assert tokens.shape == (37, 16) and torch.equal(tokens[0], torch.zeros(16))
    patches = tokens[1:].reshape(6, 6, 16)
    red_circle = oracle.color["red"] + oracle.shape["circle"]
    blue_star = oracle.color["blue"] + oracle.shape["star"]
    position = oracle.position.reshape(6, 6, 16)
    for r in range(6):
        for c in range(6):
            if r < 2 and c >= 4:
                content = red_circle
            elif r >= 4 and c < 2:
                content = blue_star
            else:
                content = oracle.background
            torch.testing.assert_close(patches[r, c], position[r, c] + content)


def test_training_pairs_reorder_or_reverse_a_relation_only(binding: ModuleType) -> None:
    scenes = {
        "a.png": Scene((_obj("circle", "red", 0, 0), _obj("star", "blue", 0, 2)), background=0),
        "b.png": Scene((_obj("cross", "green", 0, 1), _obj("square", "white", 2, 1)), background=1),
    }
    pairs = binding.training_pairs(scenes, draws=3, seed=0)
    assert pairs == binding.training_pairs(scenes, draws=3, seed=0)  # seeded
    assert len(pairs) == 2 * 3 * 2  # each scene allows both kinds on every draw
    for path, true, false in pairs:
        words, negative = (sorted(text.lower().rstrip(".").split()) for text in (true, false))
        if words != negative:  # replace_rel: the opposite relation, the same objects in the same order
            assert {w for w in words if w not in negative} | {w for w in negative if w not in words} <= {
                "left",
                "right",
                "above",
                "below",
            }
        if path == "a.png":
            assert ("red circle to the left of" in true) or ("blue star to the right of" in true), true
