"""Run reports: the schema every evaluator and benchmark writes, measuring, rendering and comparison."""

from albef.reporting.compare import ComparisonResult, compare_reports, comparison_text
from albef.reporting.environment import collect_environment, file_sha256, utc_now_iso
from albef.reporting.flops import count_flops, flops_per_item, mfu
from albef.reporting.measure import StageTimer, percentile, stage_stats, timed
from albef.reporting.paper import PaperCell, load_paper_cells, paper_comparison, paper_markdown
from albef.reporting.render import render, report_markdown, to_frames
from albef.reporting.schema import (
    SCHEMA_VERSION,
    CheckpointInfo,
    Environment,
    LatencyStats,
    Metric,
    PeakMemory,
    ReportError,
    RunReport,
    StageStats,
)
from albef.reporting.side_by_side import comparison_markdown, render_many

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointInfo",
    "Environment",
    "LatencyStats",
    "Metric",
    "PeakMemory",
    "ReportError",
    "RunReport",
    "StageStats",
]
__all__ += [
    "StageTimer",
    "collect_environment",
    "count_flops",
    "file_sha256",
    "flops_per_item",
    "mfu",
    "percentile",
    "stage_stats",
    "timed",
    "utc_now_iso",
]

__all__ += [
    "ComparisonResult",
    "PaperCell",
    "compare_reports",
    "comparison_markdown",
    "comparison_text",
    "load_paper_cells",
    "paper_comparison",
    "paper_markdown",
    "render",
    "render_many",
    "report_markdown",
    "to_frames",
]
