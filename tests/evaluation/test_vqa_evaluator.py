"""The VQA evaluator on the small synthetic world with a tiny random model: batching and chunking change
nothing, the run is scored and timed, and ``albef evaluate vqa`` writes a complete server file or none."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from albef.cli.main import main
from albef.config import load_config
from albef.config.schema import ExperimentConfig
from albef.data.tokenizer import TextTokenizer
from albef.engine.precision import resolve_precision
from albef.errors import DataError
from albef.evaluation.memory_plan import answer_row_bytes, rank_chunk_rows
from albef.evaluation.vqa import RankingOptions, VQAEvaluator, VQASplit
from albef.models.builders import create_model
from albef.models.vqa import ALBEFVQA
from albef.reporting.schema import RunReport
from albef.tasks.data import build_tokenizer
from albef.tasks.vqa import build_evaluator, vqa_split
from tests.engine import TINY_OVERRIDES, small_world

CPU = resolve_precision("fp32", torch.device("cpu"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory)


def _overrides(world: Path) -> list[str]:
    return [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES]


@pytest.fixture(scope="module")
def cfg(world: Path) -> ExperimentConfig:
    return load_config("synthetic_vqa", _overrides(world))


@pytest.fixture(scope="module")
def tokenizer(cfg: ExperimentConfig) -> TextTokenizer:
    return build_tokenizer(cfg.data)


@pytest.fixture(scope="module")
def model(cfg: ExperimentConfig) -> ALBEFVQA:
    torch.manual_seed(0)
    built = create_model("vqa", dataclasses.replace(cfg.model, distill=False))
    assert isinstance(built, ALBEFVQA)
    return built.eval()


@pytest.fixture(scope="module")
def split(cfg: ExperimentConfig) -> VQASplit:
    return vqa_split(cfg, "test")


def _evaluator(
    cfg: ExperimentConfig, split: VQASplit, tokenizer: TextTokenizer, **kwargs: object
) -> VQAEvaluator:
    batch_size = int(kwargs.pop("batch_size", cfg.data.batch_size_test))  # type: ignore[call-overload]
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size_test=batch_size))
    ranking = RankingOptions(**kwargs) if kwargs else None  # type: ignore[arg-type]
    return build_evaluator(cfg, split, tokenizer, CPU, ranking)


def test_the_split_has_questions_answers_and_ground_truth(split: VQASplit) -> None:
    assert len(split.records) == 64 and len(split.answer_list) > 10
    assert split.truths is not None and [t.question_id for t in split.truths] == split.question_ids
    assert {t.answer_type for t in split.truths} == {"yes/no", "number", "other"}


def test_batched_ranking_equals_one_question_at_a_time(
    cfg: ExperimentConfig, split: VQASplit, tokenizer: TextTokenizer, model: ALBEFVQA
) -> None:
    # Every answer is a candidate (k = the whole list), so only the scores decide, not the top-k cut.
    part = dataclasses.replace(split, records=split.records[:12], truths=None)
    k = len(split.answer_list)
    batched = _evaluator(cfg, part, tokenizer, batch_size=12, k=k).run(model)
    single = _evaluator(cfg, part, tokenizer, batch_size=1, k=k, chunk_size=5).run(model)
    assert batched.outputs["answers"] == single.outputs["answers"]
    assert list(batched.outputs["answers"]) == part.question_ids


def test_ranking_one_question_at_a_time_gives_the_same_scores(
    cfg: ExperimentConfig, split: VQASplit, tokenizer: TextTokenizer, model: ALBEFVQA
) -> None:
    questions = tokenizer.encode(
        ["what color is the square", "how many red circles are there", "is there a star"]
    )
    answers = tokenizer.encode_answers(split.answer_list)
    image = torch.randn(
        3,
        3,
        cfg.model.vision.image_res,
        cfg.model.vision.image_res,
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        states = model.encode_question(image, questions.input_ids, questions.attention_mask)
        ranked = model.rank_answers(
            states,
            questions.attention_mask,
            answers.input_ids,
            answers.attention_mask,
            k=8,
            pad_id=0,
            chunk_size=6,
        )
        for q in range(3):
            length = int(questions.attention_mask[q].sum())
            ids, mask = questions.input_ids[q : q + 1, :length], questions.attention_mask[q : q + 1, :length]
            one_states = model.encode_question(image[q : q + 1], ids, mask)
            one = model.rank_answers(
                one_states, mask, answers.input_ids, answers.attention_mask, k=8, pad_id=0
            )
            assert torch.equal(one.ids[0], ranked.ids[q])
            torch.testing.assert_close(one.probs[0], ranked.probs[q], atol=1e-6, rtol=1e-5)


def test_a_run_is_scored_and_timed(
    cfg: ExperimentConfig, split: VQASplit, tokenizer: TextTokenizer, model: ALBEFVQA
) -> None:
    result = _evaluator(cfg, split, tokenizer, batch_size=16, k=8).run(model)
    assert result.n_samples == 64 and set(result.outputs["answers"]) == set(split.question_ids)
    assert set(result.outputs["answers"].values()) <= set(split.answer_list)
    metrics = result.metrics
    assert 0.0 <= metrics["overall"].value <= 100.0 and metrics["overall"].group is None
    assert {m.group for n, m in metrics.items() if n.startswith("answer_type/")} == {"answer_type"}
    assert {n for n in metrics if n.startswith("answer_type/")} == {
        "answer_type/yes/no",
        "answer_type/number",
        "answer_type/other",
    }
    assert set(result.stages) == {"question_encode", "answer_ranking"}
    ranking = result.stages["answer_ranking"]
    assert ranking.item == "question" and ranking.warmup_batches == 1 and ranking.num_batches == 3
    assert result.extra["questions_per_s"] > 0 and result.extra["k"] == 8
    assert result.extra["vqa_accuracy"]["overall"] == metrics["overall"].value


def test_the_two_scorings_rank_differently_but_both_run(
    cfg: ExperimentConfig, split: VQASplit, tokenizer: TextTokenizer, model: ALBEFVQA
) -> None:
    part = dataclasses.replace(split, records=split.records[:8], truths=None)
    official = _evaluator(cfg, part, tokenizer, k=8, scoring="official").run(model)
    sequence = _evaluator(cfg, part, tokenizer, k=8, scoring="sequence").run(model)
    assert set(official.outputs["answers"]) == set(sequence.outputs["answers"])
    assert sequence.extra["answer_scoring"] == "sequence"


# -- the command and incomplete results ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(model: ALBEFVQA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "vqa.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def _evaluate_argv(world: Path, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    argv = ["evaluate", "vqa", "--checkpoint", str(checkpoint), "--output-dir", str(out), "--k", "8"]
    for override in (*_overrides(world), *extra):
        argv += ["--set", override]
    return argv


def test_evaluate_command_writes_server_file_and_report(
    world: Path, checkpoint: Path, tmp_path: Path
) -> None:
    assert main(_evaluate_argv(world, checkpoint, tmp_path)) == 0
    records = json.loads((tmp_path / "vqa_result_test.json").read_text())
    assert len(records) == 64 and len({r["question_id"] for r in records}) == 64
    assert all(set(r) == {"question_id", "answer"} and isinstance(r["question_id"], int) for r in records)
    report = RunReport.load(tmp_path / "vqa_test_report.json")
    assert (report.task, report.split, report.dataset) == ("vqa", "test", "synthetic")
    assert report.checkpoint is not None and report.checkpoint.sha256
    assert "overall" in report.metrics and set(report.stages) == {"question_encode", "answer_ranking"}
    assert report.extra["result_file"] == str(tmp_path / "vqa_result_test.json")


def test_log_samples_gives_every_question_its_ranked_answers_and_accuracy(
    world: Path, checkpoint: Path, tmp_path: Path
) -> None:
    assert main([*_evaluate_argv(world, checkpoint, tmp_path), "--log-samples"]) == 0
    answers = {
        r["question_id"]: r["answer"] for r in json.loads((tmp_path / "vqa_result_test.json").read_text())
    }
    lines = [json.loads(x) for x in (tmp_path / "vqa_test-samples.jsonl").read_text().splitlines()]
    assert len(lines) == 64 and {r["question_id"] for r in lines} == set(answers)
    for record in lines:
        assert record["answer"] == answers[record["question_id"]] == record["ranked"][0][0]
        probs = [p for _, p in record["ranked"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert record["truth"] and 0.0 <= record["accuracy"] <= 1.0
    report = RunReport.load(tmp_path / "vqa_test_report.json")
    mean = 100 * sum(r["accuracy"] for r in lines) / 64  # the official overall is the mean, rounded
    assert report.metrics["overall"].value == pytest.approx(mean, abs=0.01)


def test_a_skipped_image_leaves_an_incomplete_result_that_is_refused(
    world: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = shutil.copytree(world, tmp_path / "world")
    first = json.loads((broken / "vqa_test.json").read_text())[0]
    (broken / first["image"]).write_bytes(b"not an image")
    same_image = [
        r["question_id"]
        for r in json.loads((broken / "vqa_test.json").read_text())
        if r["image"] == first["image"]
    ]
    out = tmp_path / "out"
    argv = _evaluate_argv(broken, checkpoint, out, "data.bad_images=skip")
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "refusing to write an incomplete" in err
    assert f"missing answers for {len(same_image)} ({', '.join(str(i) for i in sorted(same_image))})" in err
    assert not (out / "vqa_result_test.json").exists()


def test_evaluate_rejects_bad_arguments(
    world: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_evaluate_argv(world, tmp_path / "missing.pt", tmp_path)) == 4
    assert "no such checkpoint file" in capsys.readouterr().err
    assert main([*_evaluate_argv(world, checkpoint, tmp_path), "--split", "val"]) == 2
    assert "no val file" in capsys.readouterr().err
    other_size = ["evaluate", "vqa", "--checkpoint", str(checkpoint), "--set", f"data.root={world}"]
    assert main([*other_size, "--set", "data.synthetic_size=small", "--output-dir", str(tmp_path)]) == 4
    assert "does not fit the vqa model" in capsys.readouterr().err


def test_ground_truth_for_other_questions_is_an_error(
    cfg: ExperimentConfig, split: VQASplit, tokenizer: TextTokenizer, model: ALBEFVQA
) -> None:
    assert split.truths is not None
    part = dataclasses.replace(split, records=split.records[:6], truths=split.truths[:4])
    with pytest.raises(DataError, match=r"2 \(.*\) question id\(s\) not in the ground truth"):
        _evaluator(cfg, part, tokenizer, k=4).run(model)


def test_decoder_calls_are_cut_to_the_memory_budget(
    cfg: ExperimentConfig, split: VQASplit, tokenizer: TextTokenizer, model: ALBEFVQA
) -> None:
    text, vocab = cfg.model.text, cfg.model.text.vocab_size
    question_len, answer_len = 14, 6
    # vocabulary logits (+ float32 log-probabilities) per answer token, question states and one layer's K/V,
    # the answer's activations, the attention scores
    expected = (
        answer_len * vocab * (4 + 8)
        + 3 * question_len * text.hidden_size * 4
        + answer_len * (6 * text.hidden_size + text.intermediate_size) * 4
        + text.num_heads * answer_len * question_len * 4
    )
    assert answer_row_bytes(model, question_len, answer_len) == expected
    budget_mb = 40 * expected / 2**20  # room for exactly 40 rows
    assert rank_chunk_rows(model, question_len, answer_len, budget_mb, k=8) == 40
    assert (
        rank_chunk_rows(model, question_len, answer_len, budget_mb / 100, k=8) == 8
    )  # a question's k at least
    assert rank_chunk_rows(model, question_len, answer_len, 1e6, k=8) == 2048  # and a cap
    # The evaluator ranks within the budget, and the answers do not depend on how the rows are cut.
    part = dataclasses.replace(split, records=split.records[:16], truths=None)
    small = _evaluator(cfg, part, tokenizer, batch_size=16, k=8, budget_mb=budget_mb / 4).run(model)
    whole = _evaluator(cfg, part, tokenizer, batch_size=16, k=8, chunk_size=16 * 8).run(model)
    assert 8 <= small.extra["rank_rows_per_call"] < 16 * 8 and whole.extra["rank_rows_per_call"] == 128
    assert small.outputs["answers"] == whole.outputs["answers"]
