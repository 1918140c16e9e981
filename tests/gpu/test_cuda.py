"""CUDA behaviour that a CPU cannot show: autocast, the SDPA backends, compile, NCCL, event timing, and the
device-resident evaluation equal to the CPU one. Marked ``gpu``: skipped without a CUDA device; run them on a
GPU machine with ``python -m pytest -m gpu tests/gpu``."""

from __future__ import annotations

import copy
import socket
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.nn.attention import SDPBackend, sdpa_kernel

from albef.config import ExperimentConfig, load_config
from albef.data.records import RetrievalEvalSet
from albef.engine.compile import compile_model
from albef.engine.precision import resolve_precision
from albef.evaluation.pair_scorer import PairScorer
from albef.evaluation.rerank import one_query_rerank
from albef.evaluation.retrieval import RetrievalEvaluator, read_eval_split, settings_from_config
from albef.models import create_model, model_preset
from albef.reporting.measure import StageTimer
from albef.tasks.data import build_tokenizer, data_path
from tests.engine import TINY_OVERRIDES, small_world
from tests.evaluation import random_features, spread_model

pytestmark = pytest.mark.gpu
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> ExperimentConfig:
    world = small_world(tmp_path_factory)
    return load_config(
        "synthetic_retrieval",
        [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, "eval.k_test=8"],
    )


@pytest.fixture(scope="module")
def split(cfg: ExperimentConfig) -> RetrievalEvalSet:
    return read_eval_split(data_path(cfg.data, str(cfg.data.test_file)))


def evaluate(cfg: ExperimentConfig, split: RetrievalEvalSet, device: torch.device, **settings: Any) -> Any:
    torch.manual_seed(0)
    model = create_model("retrieval", cfg.model).to(device).eval()
    evaluator = RetrievalEvaluator(
        split, data_path(cfg.data, cfg.data.image_root), build_tokenizer(cfg.data),
        resolve_precision("fp32", device), settings_from_config(cfg, **settings),
    )  # fmt: skip
    return evaluator.run(model)


def test_device_resident_evaluation_equals_the_cpu_evaluation(
    cfg: ExperimentConfig, split: RetrievalEvalSet
) -> None:
    on_cpu = evaluate(cfg, split, CPU)
    resident = evaluate(cfg, split, CUDA, residency="device")
    staged = evaluate(cfg, split, CUDA, residency="host")
    assert resident.extra["residency"]["mode"] == "device" and staged.extra["residency"]["mode"] == "host"
    for key in ("scores_i2t", "scores_t2i"):  # the same kernels on the device, however the rows got there
        assert torch.equal(resident.outputs[key], staged.outputs[key])
        torch.testing.assert_close(resident.outputs[key], on_cpu.outputs[key], atol=1e-4, rtol=1e-4)
    assert resident.values() == on_cpu.values()


def test_the_scorer_on_cuda_equals_the_one_query_loop_closely() -> None:
    model = spread_model().to(CUDA)
    f = {k: v.to(CUDA) for k, v in random_features(12, 40).items()}
    _, candidates = f["sims"].topk(16, dim=1)
    loop = one_query_rerank(model, f["image_embeds"], f["text_states"], f["text_mask"], candidates, "i2t")  # type: ignore[arg-type]
    scorer = PairScorer(model, f["image_embeds"], f["text_states"], f["text_mask"], CUDA, pairs_per_call=64)  # type: ignore[arg-type]
    rows = torch.arange(12, device=CUDA).repeat_interleave(16)
    scores = scorer.score(rows, candidates.reshape(-1)).view(12, 16)
    torch.testing.assert_close(scores, loop.cpu(), atol=1e-4, rtol=1e-4)


def test_bf16_autocast_runs_the_matmuls_in_bf16_and_stays_close() -> None:
    torch.manual_seed(0)
    model = create_model("retrieval", model_preset("albef_tiny")).to(CUDA).eval()
    images = torch.randn(4, 3, model.visual_encoder.image_res, model.visual_encoder.image_res, device=CUDA)  # type: ignore[attr-defined]
    with torch.inference_mode():
        fp32 = model.encode_image(images)  # type: ignore[operator]
        with resolve_precision("amp_bf16", CUDA).autocast():
            bf16 = model.encode_image(images)  # type: ignore[operator]
    assert fp32.embeds.dtype == torch.float32 and bf16.embeds.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.feat.float(), fp32.feat, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize(
    "backend", [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
)
def test_every_sdpa_backend_gives_the_same_encoding(backend: SDPBackend) -> None:
    torch.manual_seed(0)
    model = create_model("retrieval", model_preset("albef_tiny")).to(CUDA).eval()
    images = torch.randn(2, 3, 64, 64, device=CUDA)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        reference = model.encode_image(images)  # type: ignore[operator]
        with sdpa_kernel(backend):
            chosen = model.encode_image(images)  # type: ignore[operator]
    torch.testing.assert_close(chosen.feat.float(), reference.feat.float(), atol=2e-2, rtol=2e-2)


def test_compiled_model_equals_eager() -> None:
    torch.manual_seed(0)
    model = create_model("retrieval", model_preset("albef_tiny")).to(CUDA).eval()
    images = torch.randn(2, 3, 64, 64, device=CUDA)
    with torch.inference_mode():
        eager = model.encode_image(images).feat  # type: ignore[operator]
        assert compile_model(model) > 0
        compiled = model.encode_image(images).feat  # type: ignore[operator]
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


def test_single_gpu_ddp_over_nccl_gives_the_plain_gradients() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 1)).to(CUDA)
        wrapped = torch.nn.parallel.DistributedDataParallel(copy.deepcopy(plain), device_ids=[0])
        x = torch.randn(16, 32, device=CUDA)
        plain(x).square().mean().backward()
        wrapped(x).square().mean().backward()
        for a, b in zip(plain.parameters(), wrapped.module.parameters(), strict=True):
            assert a.grad is not None and b.grad is not None
            torch.testing.assert_close(a.grad, b.grad)
        tensor = torch.ones(3, device=CUDA)
        dist.all_reduce(tensor)
        assert tensor.tolist() == [1.0, 1.0, 1.0]
    finally:
        dist.destroy_process_group()


def test_cuda_event_timing_sees_queued_work() -> None:
    timer = StageTimer(CUDA)
    cycles = 50_000_000  # about 25-50 ms of one SM's spinning, queued without the host waiting
    with timer.stage("synced", items=1):
        torch.cuda._sleep(cycles)
    for _ in range(3):
        with timer.unsynced_stage("unsynced", items=1):
            torch.cuda._sleep(cycles)
    stats = timer.stats()
    synced, unsynced = stats["synced"].latency_batch.p50_ms, stats["unsynced"].latency_batch.p50_ms
    assert synced > 5 and unsynced > 5
    assert abs(synced - unsynced) < 0.5 * synced  # the events time the device work, not the launch


def test_vqa_ranking_stays_within_its_memory_budget() -> None:
    from albef.evaluation.memory_plan import rank_chunk_rows

    torch.manual_seed(0)
    model = create_model("vqa", model_preset("albef_tiny")).to(CUDA).eval()
    vocab = model_preset("albef_tiny").text.vocab_size
    answers = torch.randint(104, vocab, (500, 6), device=CUDA)
    answers[:, 0] = 101
    states = torch.randn(32, 10, model_preset("albef_tiny").text.hidden_size, device=CUDA)
    mask = torch.ones(32, 10, dtype=torch.long, device=CUDA)
    budget_mb = 64.0
    rows = rank_chunk_rows(model, 10, 6, budget_mb, k=64)  # type: ignore[arg-type]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.inference_mode():
        model.rank_answers(states, mask, answers, torch.ones_like(answers), k=64, pad_id=0, chunk_size=rows)  # type: ignore[operator]
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    assert peak <= 1.5 * budget_mb, f"ranking peaked at {peak:.0f} MiB for a {budget_mb:.0f} MiB budget"
