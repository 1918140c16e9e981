"""The leaderboard across runs (rows: checkpoints; columns: task, dataset, split, metric) and the CLIP_benchmark
result files, checked against the schema of CLIP_benchmark's own ``build`` (and the real one where installed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from albef.cli.main import main
from albef.reporting.clip_benchmark import NotExportable, clip_benchmark_result
from albef.reporting.schema import CheckpointInfo, RunReport
from albef.reporting.side_by_side import leaderboard_frame, leaderboard_markdown

CLIP_BENCHMARK_KEYS = {"dataset", "model", "pretrained", "task", "metrics", "language"}
"""The keys every CLIP_benchmark result file has (its ``run`` writes them; its ``build`` reads them)."""


def report(task: str, dataset: str, split: str, ckpt: str, **metrics: float) -> RunReport:
    run = RunReport(kind="evaluation", task=task, dataset=dataset, split=split)
    run.checkpoint = CheckpointInfo(path=f"runs/{ckpt}.pt", sha256=ckpt * 16)
    for name, value in metrics.items():
        run.add_metric(name, value, n=100, interval=(value - 2.0, value + 3.0))
    return run


def runs() -> list[RunReport]:
    return [
        report(
            "retrieval", "coco", "test", "a", r_mean=80.0, txt_r1=70.0, img_r1=55.0, txt_r5=90.0, img_r5=85.0
        ),
        report("retrieval", "coco", "test", "b", r_mean=60.0, txt_r1=50.0, img_r1=40.0),
        report("nlvr", "nlvr2", "test-P", "a", accuracy=80.5),
        report("winoground", "winoground", "test", "b", **{"itm/group_score": 20.0, "itc/group_score": 8.0}),
    ]


def test_leaderboard_has_a_row_per_checkpoint_and_a_column_per_task_metric() -> None:
    frame, bounds = leaderboard_frame(runs())
    assert list(frame.index) == ["a.pt (aaaaaaaaaaaa)", "b.pt (bbbbbbbbbbbb)"]
    assert list(frame.columns) == [
        "retrieval coco test r_mean", "retrieval coco test txt_r1", "retrieval coco test img_r1",
        "nlvr nlvr2 test-P accuracy", "winoground winoground test itc/group_score",
        "winoground winoground test itm/group_score",
    ]  # fmt: skip
    assert frame.loc["a.pt (aaaaaaaaaaaa)", "nlvr nlvr2 test-P accuracy"] == 80.5
    assert bounds.loc["b.pt (bbbbbbbbbbbb)", "retrieval coco test r_mean"] == "[58.00, 63.00]"
    text = leaderboard_markdown(runs())
    row_a = next(line for line in text.splitlines() if line.startswith("| a.pt"))
    assert "80.00 ± 2.50" in row_a and row_a.rstrip(" |").endswith("-")  # a has no Winoground run


def test_render_of_several_runs_writes_the_leaderboard(tmp_path: Path) -> None:
    paths = [r.save(tmp_path / f"run{i}.json") for i, r in enumerate(runs())]
    assert main(["report", "render", *map(str, paths), "--out", str(tmp_path / "out")]) == 0
    with (tmp_path / "out" / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["checkpoint"] for r in rows] == ["a.pt (aaaaaaaaaaaa)", "b.pt (bbbbbbbbbbbb)"]
    assert rows[1]["winoground winoground test itm/group_score"] == "20.0"
    assert rows[1]["winoground winoground test itm/group_score 95% CI"] == "[18.00, 23.00]"
    assert "## Leaderboard" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_clip_benchmark_results_use_its_names_and_fractions() -> None:
    retrieval = clip_benchmark_result(runs()[0])
    assert set(retrieval) >= CLIP_BENCHMARK_KEYS
    assert (retrieval["dataset"], retrieval["task"], retrieval["pretrained"]) == (
        "mscoco_captions", "zeroshot_retrieval", "a.pt",
    )  # fmt: skip
    assert retrieval["metrics"] == {
        "text_retrieval_recall@1": 0.70, "image_retrieval_recall@1": 0.55,
        "text_retrieval_recall@5": 0.90, "image_retrieval_recall@5": 0.85,
    }  # fmt: skip
    nlvr = clip_benchmark_result(runs()[2], pretrained="nlvr.pth")
    assert (nlvr["task"], nlvr["metrics"], nlvr["pretrained"]) == (
        "zeroshot_classification",
        {"acc1": 0.805},
        "nlvr.pth",
    )
    ve = report("ve", "snli_ve", "test", "c", accuracy=80.0)
    for name, value in (("entailment", 90.0), ("neutral", 70.0), ("contradiction", 80.0)):
        ve.add_metric(f"class/{name}", value, group="class")
    assert clip_benchmark_result(ve)["metrics"] == {"acc1": 0.8, "mean_per_class_recall": pytest.approx(0.8)}
    with pytest.raises(NotExportable, match="vqa"):
        clip_benchmark_result(report("vqa", "vqa_v2", "test-dev", "d", overall=70.0))


def test_clip_benchmark_files_go_through_its_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [r.save(tmp_path / f"run{i}.json") for i, r in enumerate(runs())]
    vqa = report("vqa", "vqa_v2", "test-dev", "d", overall=70.0).save(tmp_path / "vqa.json")
    out = tmp_path / "cb"
    assert main(["report", "clip-benchmark", *map(str, paths), str(vqa), "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().err
    files = sorted(out.glob("*.json"))
    assert [f.name for f in files] == ["run0.json", "run1.json", "run2.json", "run3.json"]
    results = [json.loads(f.read_text()) for f in files]
    for result in results:  # the schema build reads: the six keys, metrics a flat mapping of numbers
        assert set(result) >= CLIP_BENCHMARK_KEYS
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in result["metrics"].values())
    assert results[3]["metrics"]["group_score"] == 0.2 and results[3]["metrics"]["group_score_itc"] == 0.08
    cli = pytest.importorskip(
        "clip_benchmark.cli", reason="CLIP_benchmark not installed: schema checked only"
    )

    from argparse import Namespace  # what `clip_benchmark build FILES --output CSV` parses into

    cli.main_build(Namespace(files=[str(f) for f in files], output=str(tmp_path / "benchmark.csv")))
    with open(tmp_path / "benchmark.csv") as handle:
        rows = {row["pretrained"] + " " + row["task"]: row for row in csv.DictReader(handle)}
    assert float(rows["a.pt zeroshot_retrieval"]["text_retrieval_recall@1"]) == 0.7
    assert rows["a.pt zeroshot_classification"]["acc1"] == "0.805"
    assert rows["b.pt image_caption_selection"]["model_fullname"] == "albef b.pt"
