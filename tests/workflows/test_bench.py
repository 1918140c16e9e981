"""The environment record and the model benchmark, end to end through ``albef bench model``."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from albef.cli.bench import output_path
from albef.cli.main import main
from albef.reporting.environment import collect_environment, file_sha256, utc_now_iso
from albef.reporting.schema import RunReport
from albef.workflows.bench import (
    STAGE_ITEMS,
    bench_model_config,
    build_bench_model,
    make_inputs,
    precision_context,
    stage_calls,
)


# -- environment ---------------------------------------------------------------------------------------------
def test_file_sha256_streams_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    data = bytes(range(256)) * 50
    path.write_bytes(data)
    assert file_sha256(path, chunk_bytes=7) == hashlib.sha256(data).hexdigest()


def test_utc_now_iso_format() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_now_iso())


def test_collect_environment_on_cpu() -> None:
    env = collect_environment(torch.device("cpu"), "fp32", seed=3, start_time="t0", wall_time_s=1.5)
    assert env.device == "cpu" and env.precision == "fp32" and env.seed == 3
    assert env.start_time == "t0" and env.wall_time_s == 1.5
    assert env.torch == torch.__version__ and env.timm and env.transformers and env.python
    assert env.device_name and env.platform
    assert env.cuda is None and env.cudnn is None
    assert env.cpu_threads == torch.get_num_threads() and env.cpu_count and env.cpu_count >= 1


# -- the benchmark's pieces ------------------------------------------------------------------------------------
def test_image_res_other_than_the_preset_builds_a_matching_position_embedding() -> None:
    cfg = bench_model_config("tiny", image_res=64)
    model = build_bench_model(cfg, seed=0, device=torch.device("cpu"))
    assert model.visual_encoder.pos_embed.shape[1] == 1 + (64 // 16) ** 2
    x = make_inputs(cfg, 2, 10, seed=0, device=torch.device("cpu"))
    with precision_context("fp32", torch.device("cpu")):
        assert model.encode_image(x.images).embeds.shape == (2, 17, 32)


def test_inputs_are_padded_to_text_len_with_shorter_texts() -> None:
    x = make_inputs(bench_model_config("albef_tiny"), 6, 12, seed=1, device=torch.device("cpu"))
    lengths = x.attention_mask.sum(1)
    assert lengths[0] == 12 and bool((lengths >= 6).all()) and bool((lengths <= 12).all())
    assert bool((x.input_ids[:, 0] == 101).all()) and bool((x.input_ids[x.attention_mask == 0] == 0).all())


def test_rerank_scores_equal_fusing_each_candidate_with_the_first_image() -> None:
    cfg = bench_model_config("albef_tiny")
    model = build_bench_model(cfg, seed=0, device=torch.device("cpu"))
    x = make_inputs(cfg, 3, 10, seed=0, device=torch.device("cpu"))
    with precision_context("fp32", torch.device("cpu")):
        calls = stage_calls(model, x)
        assert list(calls) == list(STAGE_ITEMS)
        scores = calls["itm_rerank"]()
        text = model.encode_text(x.input_ids, x.attention_mask)
        image = model.encode_image(x.images[:1])
        order = (image.feat @ text.feat.T)[0].argsort(descending=True)
        expected = []
        for j in order.tolist():
            one = type(text)(text.states[j : j + 1], text.mask[j : j + 1], text.feat[j : j + 1])
            expected.append(model.itm_logits(model.fuse(one, image.embeds))[0, 1])
    assert isinstance(scores, torch.Tensor) and scores.shape == (3,)
    torch.testing.assert_close(scores, torch.stack(expected), atol=1e-5, rtol=1e-4)


def test_output_path() -> None:
    assert output_path(None, "albef_tiny", "cpu") == Path("reports/bench/model-tiny-cpu.json")
    assert output_path(Path("out"), "albef_base", "cuda") == Path("out/model-base-cuda.json")
    assert output_path(Path("a/b.json"), "albef_base", "cuda") == Path("a/b.json")


# -- end to end ------------------------------------------------------------------------------------------------
def test_bench_model_cli_writes_a_complete_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "bench",
        "model",
        "--preset",
        "albef_tiny",
        "--batch-sizes",
        "1,2",
        "--precision",
        "fp32,cast_bf16",
    ]
    argv += ["--iters", "2", "--warmup", "1", "--device", "cpu", "--text-len", "12", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "itm_rerank" in out and "wrote" in out
    report = RunReport.load(tmp_path / "model-tiny-cpu.json")
    assert (report.kind, report.task, report.dataset) == ("benchmark", "model", "synthetic-inputs")
    assert report.model_preset == "albef_tiny"
    expected = {f"{s}/{p}/bs{b}" for s in STAGE_ITEMS for p in ("fp32", "cast_bf16") for b in (1, 2)}
    assert set(report.stages) == expected
    for key, stats in report.stages.items():
        stage, precision, batch = key.split("/")
        assert stats.stage == key and stats.precision == precision and stats.batch_size == int(batch[2:])
        assert stats.item == STAGE_ITEMS[stage]
        assert stats.num_batches == 2 and stats.warmup_batches == 1 and len(stats.samples_ms) == 2
        assert stats.items_per_s > 0 and stats.latency_batch.p50_ms > 0
        assert stats.flops_per_item and stats.flops_per_item > 0 and stats.achieved_tflops
        assert stats.mfu is None  # no peak is known for a CPU
    env = report.environment
    assert env.device == "cpu" and env.precision == "fp32,cast_bf16" and env.seed == 0
    assert env.torch and env.device_name and env.start_time and env.wall_time_s and env.wall_time_s > 0
    assert report.memory is not None and report.memory.kind == "process_peak_rss"
    assert (
        report.config["bench"]["batch_sizes"] == [1, 2]
        and report.config["model"]["vision"]["image_res"] == 48
    )


def test_bench_model_cli_rejects_fp16_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "model", "--preset", "tiny", "--precision", "cast_fp16", "--device", "cpu"]) == 2
    assert "need a CUDA device" in capsys.readouterr().err
