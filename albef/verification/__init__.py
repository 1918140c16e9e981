"""Verification of our implementation against the official reference fixtures (``albef verify-reference``).

Importing this package registers nothing and runs nothing; :func:`verify_reference` loads the checks.
"""

from albef.verification.compare import CheckRow, Comparison, compare
from albef.verification.fixtures import (
    FIXTURE_TASKS,
    FixtureError,
    ReferenceFixture,
    build_reference_model,
    load_fixture,
    model_config_from_fixture,
)
from albef.verification.reference import (
    CHECKS,
    FixtureContext,
    ReferenceCheck,
    ReferenceDirError,
    apply_strict,
    exit_status,
    output_check,
    rows_check,
    verify_reference,
)

__all__ = [
    "CHECKS",
    "FIXTURE_TASKS",
    "CheckRow",
    "Comparison",
    "FixtureContext",
    "FixtureError",
    "ReferenceCheck",
    "ReferenceDirError",
    "ReferenceFixture",
    "apply_strict",
    "build_reference_model",
    "compare",
    "exit_status",
    "load_fixture",
    "model_config_from_fixture",
    "output_check",
    "rows_check",
    "verify_reference",
]
