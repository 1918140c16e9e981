"""Timing arithmetic on hand-made samples, the stage timer with a fake clock, FLOPs and MFU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from albef.reporting import flops, measure
from albef.reporting.measure import StageTimer, latency_stats, percentile, stage_stats


# -- arithmetic ----------------------------------------------------------------------------------------------
def test_percentile_interpolates_linearly_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # sorted 1, 2, 3, 4 at positions 0..3
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5  # position 1.5
    assert percentile(values, 95) == pytest.approx(3.85)  # position 2.85
    assert percentile([7.0], 99) == 7.0
    assert percentile([0.0, 10.0], 25) == 2.5
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_stats_of_hand_made_samples() -> None:
    stats = latency_stats([10.0, 20.0, 30.0, 40.0, 50.0])
    assert (stats.mean_ms, stats.p50_ms, stats.min_ms, stats.max_ms) == (30.0, 30.0, 10.0, 50.0)
    assert stats.p95_ms == pytest.approx(48.0)  # position 3.8
    assert stats.p99_ms == pytest.approx(49.6)  # position 3.96


def test_stage_stats_items_per_second_and_per_item_latency_with_a_short_last_batch() -> None:
    # three batches of 4, 4 and 2 items taking 0.1, 0.3 and 0.1 s
    stats = stage_stats([0.1, 0.3, 0.1], [4, 4, 2], warmup=2, stage="s", item="image", precision="bf16")
    assert stats.items == 10 and stats.num_batches == 3 and stats.batch_size == 4
    assert stats.warmup_batches == 2 and stats.item == "image" and stats.precision == "bf16"
    assert stats.items_per_s == pytest.approx(10 / 0.5)
    assert stats.samples_ms == [100.0, 300.0, 100.0]
    assert stats.latency_batch.p50_ms == pytest.approx(100.0)
    assert stats.latency_batch.mean_ms == pytest.approx(500.0 / 3)
    assert stats.latency_batch.max_ms == pytest.approx(300.0)
    # per item: 25, 75, 50 ms
    assert stats.latency_item.p50_ms == pytest.approx(50.0)
    assert stats.latency_item.min_ms == pytest.approx(25.0)
    assert stats.latency_item.max_ms == pytest.approx(75.0)
    assert stats.latency_item.mean_ms == pytest.approx(50.0)


def test_stage_stats_with_one_count_for_all_calls_and_bad_input() -> None:
    stats = stage_stats([0.5, 0.25, 0.25], 8, warmup=0, stage="s")
    assert stats.items == 24 and stats.items_per_s == 24.0 and stats.latency_item.p50_ms == 31.25
    with pytest.raises(ValueError, match="no timed calls"):
        stage_stats([], 8, warmup=1, stage="s")
    with pytest.raises(ValueError, match="item counts"):
        stage_stats([0.1, 0.2], [1], warmup=0, stage="s")


# -- the stage timer with a fake clock -----------------------------------------------------------------------
class FakeClock:
    """``time.perf_counter`` that only moves when the timed body says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(measure.time, "perf_counter", fake)
    return fake


def test_stage_context_excludes_warmup_and_keeps_each_call(clock: FakeClock) -> None:
    timer = StageTimer(torch.device("cpu"), warmup=2)
    durations = [5.0, 5.0, 0.25, 0.5, 0.25]  # the first two are warm-up
    for seconds, items in zip(durations, [4, 4, 4, 4, 1], strict=True):
        with timer.stage("image_encode", items=items, item="image"):
            clock.now += seconds
    stats = timer.stats()["image_encode"]
    assert stats.warmup_batches == 2 and stats.num_batches == 3
    assert stats.samples_ms == [250.0, 500.0, 250.0]
    assert stats.items == 9 and stats.items_per_s == 9.0
    assert stats.latency_item.max_ms == 250.0  # the 1-item batch
    assert stats.peak_memory_mib is None  # process RSS cannot be isolated per stage


def test_unsynced_stage_on_a_cpu_times_like_stage(clock: FakeClock) -> None:
    """Off CUDA there is nothing to wait for: the same samples and warm-up as :meth:`StageTimer.stage`."""
    timer = StageTimer(torch.device("cpu"), warmup=1)
    for seconds in (9.0, 0.5, 0.25):
        with timer.unsynced_stage("classify", items=2, item="pair"):
            clock.now += seconds
    stats = timer.stats()["classify"]
    assert stats.warmup_batches == 1 and stats.samples_ms == [500.0, 250.0] and stats.item == "pair"


def test_measure_runs_warmup_untimed_then_times_each_call(clock: FakeClock) -> None:
    calls = []

    def fn() -> None:
        calls.append(clock.now)
        clock.now += 0.5 if len(calls) > 3 else 100.0  # warm-up calls are slow

    stats = StageTimer(torch.device("cpu")).measure("text", fn, 2, iters=4, warmup=3, item="text")
    assert len(calls) == 7
    assert stats.warmup_batches == 3 and stats.samples_ms == [500.0] * 4
    assert stats.items_per_s == 4.0 and stats.item == "text"


def test_stats_skips_stages_that_only_warmed_up_and_unknown_stage_is_an_error(clock: FakeClock) -> None:
    timer = StageTimer(torch.device("cpu"), warmup=1)
    with timer.stage("a", items=1):
        clock.now += 1.0
    assert timer.stats() == {}
    with pytest.raises(KeyError, match="no stage 'b'"):
        timer.stage_stats("b")


def test_timer_on_cpu_reports_process_peak_rss() -> None:
    memory = StageTimer(torch.device("cpu")).peak_memory()
    assert memory.kind == "process_peak_rss" and memory.mib > 10


def test_real_clock_gives_positive_samples() -> None:
    stats = StageTimer(torch.device("cpu")).measure(
        "mm", lambda: torch.ones(8, 8) @ torch.ones(8, 8), 1, iters=2
    )
    assert all(s > 0 for s in stats.samples_ms) and math.isfinite(stats.items_per_s)


# -- FLOPs and MFU -------------------------------------------------------------------------------------------
def test_flops_of_a_linear_layer_are_two_in_out_batch() -> None:
    layer, x = nn.Linear(7, 5), torch.randn(3, 7)
    assert flops.count_flops(lambda: layer(x)) == 2 * 7 * 5 * 3
    assert flops.flops_per_item(lambda: layer(x), items=3) == 2 * 7 * 5


def test_cpu_sdpa_counts_like_the_plain_math_attention() -> None:
    q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 6, 8)
    mask = torch.zeros(2, 1, 1, 6)
    expected = 2 * (2 * (2 * 3) * 5 * 6 * 8)  # Q K^T and P V, 2 FLOPs per multiply-add each
    with torch.inference_mode():
        assert flops.count_flops(lambda: F.scaled_dot_product_attention(q, k, k, attn_mask=mask)) == expected
        assert flops.count_flops(lambda: (q @ k.transpose(-1, -2)).softmax(-1) @ k) == expected


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("AMD EPYC 7R13 Processor", None),
    ],
)
def test_device_family_from_cuda_device_names(name: str, family: str | None) -> None:
    assert flops.device_family(name) == family


def test_mfu_on_known_devices_and_none_on_cpu() -> None:
    assert flops.mfu(494.75e12, "NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(0.5)
    assert flops.mfu(494.75e12, "NVIDIA H100 80GB HBM3", "amp_bf16") == pytest.approx(0.5)
    assert flops.mfu(6.7e12, "NVIDIA H100 80GB HBM3", "fp32") == pytest.approx(0.1)
    assert flops.mfu(156e12, "NVIDIA A100-SXM4-40GB", "tf32") == pytest.approx(1.0)
    assert flops.mfu(1e12, "AMD EPYC 7R13 Processor", "fp32") is None
    assert flops.compute_precision("fp32", allow_tf32=True) == "tf32"
    assert flops.compute_precision("amp_fp16") == "fp16"
    with pytest.raises(ValueError, match="unknown precision"):
        flops.mfu(1.0, "NVIDIA H100 PCIe", "int8")
