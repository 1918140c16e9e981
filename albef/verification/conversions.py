"""The checkpoint conversions of ``pretrain.pt['conversions']`` as rows of the verification table.

Each conversion (pretraining checkpoint -> retrieval, VQA, VE, NLVR² pretraining, NLVR²) is replayed and
compared by :func:`albef.checkpoint.convert.check_official_conversions`; this module turns its results
into rows named ``conversions.<name>``.
"""

from __future__ import annotations

import math

from albef.checkpoint.convert import ConversionCheck, check_official_conversions
from albef.verification.compare import CheckRow
from albef.verification.reference import FixtureContext, rows_check


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
