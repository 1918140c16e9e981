"""The checkpoint conversions of ``pretrain.pt['conversions']`` as rows of the verification table.

Each conversion (pretraining checkpoint -> retrieval, VQA, VE, NLVR² pretraining, NLVR²) is replayed through
:func:`~albef.checkpoint.convert.load_checkpoint` and compared by :func:`check_official_conversions` (values and
key sets); :func:`conversion_row` turns its results into rows named ``conversions.<name>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from albef.checkpoint.convert import load_checkpoint
from albef.checkpoint.layout import official_keys, ours_to_official
from albef.checkpoint.strict import LoadReport
from albef.models.builders import create_model
from albef.verification.compare import CheckRow
from albef.verification.fixtures import model_config_from_official
from albef.verification.reference import FixtureContext, rows_check

# -- replaying the reference fixture ------------------------------------------------------------------------
_FIXTURE_CONVERSIONS = (
    ("retrieval", "retrieval"),
    ("vqa", "vqa"),
    ("ve", "ve"),
    ("pretrain_nlvr", "nlvr_pretrain"),
    ("nlvr", "nlvr"),
)
"""``pretrain.pt['conversions']`` entry -> our task."""
POS_EMBED_ATOL = 1e-6


@dataclass
class ConversionCheck:
    """One official conversion replayed against the fixture.

    Attributes:
        name: The fixture entry (``retrieval``, ``vqa``, ``ve``, ``pretrain_nlvr``, ``nlvr``).
        max_abs_diff: Largest difference over the recorded tensors (``pos_embed`` may differ by 1e-6).
        keys_match: Loaded, missing and unexpected key sets (official names) equal the recorded ones.
        passed: ``keys_match`` and every tensor equal (``pos_embed`` within 1e-6).
        detail: ``ok: ...`` counts, or what differed.
    """

    name: str
    max_abs_diff: float
    keys_match: bool
    passed: bool
    detail: str


def _key_set_problems(what: str, ours: set[str], official: set[str]) -> list[str]:
    if ours == official:
        return []
    return [
        f"{what}: ours only {sorted(ours - official)[:3]} ({len(ours - official)}), "
        f"official only {sorted(official - ours)[:3]} ({len(official - ours)})"
    ]


def _compare(
    name: str, task: str, model: nn.Module, report: LoadReport, entry: Mapping[str, Any]
) -> ConversionCheck:
    """Our converted model, exported to official names, against one fixture entry."""
    exported = ours_to_official(model.state_dict(), task)
    reference: Mapping[str, Tensor] = entry["state_dict"]
    missing, unexpected = (
        set(official_keys(report.missing, task)),
        set(official_keys(report.unexpected, task)),
    )
    problems = _key_set_problems("missing keys", missing, set(entry["missing_keys"]))
    problems += _key_set_problems("unexpected keys", unexpected, set(entry["unexpected_keys"]))
    problems += _key_set_problems("loaded keys", {k for k in exported if k not in missing}, set(reference))
    keys_match = not problems
    max_diff = 0.0
    for key, ref in reference.items():
        mine = exported.get(key)
        if mine is None:
            continue
        if mine.shape != ref.shape or mine.dtype != ref.dtype:
            problems.append(f"{key}: ours {tuple(mine.shape)} {mine.dtype} vs {tuple(ref.shape)} {ref.dtype}")
            continue
        diff = float((mine.double() - ref.double()).abs().max()) if ref.numel() else 0.0
        max_diff = max(max_diff, diff)
        if diff > (POS_EMBED_ATOL if key.endswith("pos_embed") else 0.0):
            problems.append(f"{key}: max abs diff {diff:.3g}")
    detail = (
        f"ok: {len(reference)} tensors equal, {len(missing)} missing, {len(unexpected)} unexpected"
        if not problems
        else "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
    )
    return ConversionCheck(name, max_diff, keys_match, not problems, detail)


def _fixture_source(fixture: Mapping[str, Any], name: str) -> dict[str, Tensor]:
    """The state dict a recorded conversion started from."""
    if name != "nlvr":
        return dict(fixture["pretrain_checkpoint"])
    # NLVR.py loaded what Pretrain_nlvr.py saves: the TA model's state dict, ta_head included.
    source = dict(fixture["conversions"]["pretrain_nlvr"]["state_dict"])
    hidden = int(fixture["config"]["bert_config"]["hidden_size"])
    source.update({"ta_head.weight": torch.zeros(3, hidden), "ta_head.bias": torch.zeros(3)})
    return source


def check_official_conversions(pretrain_fixture: Mapping[str, Any]) -> list[ConversionCheck]:
    """Replay every conversion of ``official_tiny/pretrain.pt`` and compare with the recorded result.

    For each entry of ``pretrain_fixture['conversions']``: build our model of that task from
    ``conversion_configs`` (e.g. retrieval at 64 px), :func:`load_checkpoint` the recorded source, export
    to official names and compare values (exact; ``pos_embed`` within 1e-6) and the loaded / missing /
    unexpected key sets. The global RNG is left untouched.

    Args:
        pretrain_fixture: ``torch.load('.../official_tiny/pretrain.pt', weights_only=True)``.

    Returns:
        One :class:`ConversionCheck` per recorded conversion (failures carry the error in ``detail``).
    """
    recorded = pretrain_fixture.get("conversions", {})
    checks = []
    for name, task in _FIXTURE_CONVERSIONS:
        if name not in recorded:
            continue
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = create_model(
                    task, model_config_from_official(pretrain_fixture["conversion_configs"][name])
                )
            report = load_checkpoint(model, task, _fixture_source(pretrain_fixture, name))
            checks.append(_compare(name, task, model, report, recorded[name]))
        except Exception as err:  # a row per conversion: report the failure instead of aborting the table
            checks.append(ConversionCheck(name, float("nan"), False, False, f"{type(err).__name__}: {err}"))
    checks += [
        ConversionCheck(n, float("nan"), False, False, "no replay defined for this conversion")
        for n in recorded
        if n not in dict(_FIXTURE_CONVERSIONS)
    ]
    return checks


def conversion_row(ctx: FixtureContext, check: ConversionCheck) -> CheckRow:
    """One conversion result as a table row (a non-finite difference means nothing was compared)."""
    diff = check.max_abs_diff if math.isfinite(check.max_abs_diff) else None
    return ctx.row(f"conversions.{check.name}", diff, "pass" if check.passed else "fail", check.detail)


@rows_check("pretrain", "conversions")
def _conversions(ctx: FixtureContext) -> list[CheckRow]:
    """Every official checkpoint conversion: converted values and key sets against the recorded ones."""
    if "conversions" not in ctx.fixture.data:
        return [ctx.row("conversions", None, "fail", "the pretrain fixture has no 'conversions' entry")]
    return [conversion_row(ctx, check) for check in check_official_conversions(ctx.fixture.data)]
