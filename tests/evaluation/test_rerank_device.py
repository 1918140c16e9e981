"""The re-rank's fusion calls never synchronise with the host, and where the features live changes nothing.

A device synchronisation is any call that needs a value on the host: ``.item()``, ``.tolist()``, ``.cpu()``,
``nonzero()``, ``bool()`` / ``int()`` / ``float()`` of a tensor, ``unique``, boolean-mask indexing, ``.numpy()``.
On a CPU none of them waits, so :class:`SyncCounter` counts the *calls* (a ``TorchFunctionMode`` sees every
tensor method): the loop over the planned calls must make none, and the planning before it does make them
(which shows that the counter sees this code at all).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from albef.engine.distributed import World
from albef.evaluation.candidates import select_candidates
from albef.evaluation.memory_plan import FusionDims, call_budget, plan_memory
from albef.evaluation.rerank import PairScorer, one_query_rerank, rerank_candidates
from albef.evaluation.rerank_store import choose_residency
from albef.reporting.measure import StageTimer
from tests.evaluation import random_features, spread_model

CPU = torch.device("cpu")
N_IMAGES, N_TEXTS, K = 24, 72, 16
SYNCING = {"item", "tolist", "cpu", "nonzero", "__bool__", "__int__", "__float__", "__index__", "numpy"}
SYNCING |= {"unique", "unique_consecutive", "masked_select", "argwhere", "nonzero_static"}


class SyncCounter(TorchFunctionMode):
    """Counts the calls that would make the host wait for a CUDA device (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in SYNCING:
            self.calls[name] += 1
        elif name == "to" and any(_is_host(a) for a in (*args[1:], kwargs.get("device"))):
            self.calls["to(cpu)"] += 1
        elif name in ("__getitem__", "__setitem__", "index_put_") and _has_bool_index(args[1:]):
            self.calls[f"{name}[bool]"] += 1
        return func(*args, **kwargs)


def _is_host(value: Any) -> bool:
    return (isinstance(value, str) and value.startswith("cpu")) or (
        isinstance(value, torch.device) and value.type == "cpu"
    )


def _has_bool_index(values: Any) -> bool:
    stack = list(values)
    while stack:
        v = stack.pop()
        if isinstance(v, torch.Tensor) and v.dtype == torch.bool:
            return True
        if isinstance(v, (tuple, list)):
            stack.extend(v)
    return False


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return spread_model()


@pytest.fixture(scope="module")
def features() -> dict[str, torch.Tensor]:
    return random_features(N_IMAGES, N_TEXTS)


def counting(scorer: PairScorer, method: str) -> tuple[SyncCounter, list[int]]:
    """Wrap ``scorer.<method>`` so its calls run under a fresh :class:`SyncCounter`; returns the counter and a
    list that receives each wrapped call's number of planned calls."""
    counter, sizes = SyncCounter(), []
    inner: Callable[..., Any] = getattr(scorer, method)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with counter:
            result = inner(*args, **kwargs)
        sizes.append(len(args[0]) if method == "run_calls" else 1)
        return result

    setattr(scorer, method, wrapped)
    return counter, sizes


@pytest.mark.parametrize("residency", ["device", "host"])
def test_the_fusion_calls_make_no_host_synchronisation(
    model: torch.nn.Module, features: dict[str, torch.Tensor], residency: str
) -> None:
    f = features
    scorer = PairScorer(
        model, f["image_embeds"], f["text_states"], f["text_mask"], CPU, pairs_per_call=64,
        timer=StageTimer(CPU), residency=residency, plan_block=300,
    )  # type: ignore[arg-type]  # fmt: skip
    loop, sizes = counting(scorer, "run_calls")
    planning, _ = counting(scorer, "_prepare")
    chosen = select_candidates(f["sims"], K, World(), StageTimer(CPU))
    part = rerank_candidates(scorer, chosen, N_TEXTS)
    assert scorer.calls >= 10 and len(sizes) >= 3  # several blocks of several calls each
    assert sum(loop.calls.values()) == 0, f"host synchronisations in the fusion calls: {dict(loop.calls)}"
    assert sum(planning.calls.values()) > 0  # the counter does see this code: setup synchronises
    for direction in ("i2t", "t2i"):  # and the scores are the official loop's
        expected = one_query_rerank(
            model, f["image_embeds"], f["text_states"], f["text_mask"], chosen.candidates[direction], direction,  # type: ignore[arg-type]
        )  # fmt: skip
        assert torch.equal(part.scores[direction], expected)


def test_the_counter_sees_each_kind_of_synchronisation() -> None:
    x = torch.arange(6.0)
    counter = SyncCounter()
    with counter:
        x[0].item(), x.tolist(), x.cpu(), x.nonzero(), bool(x[1]), int(x[2]), float(x[3]), x.unique()
        x.to("cpu"), x[x > 2], torch.unique_consecutive(x), x.to(torch.float64), x[torch.tensor([1, 2])]
    assert set(counter.calls) == {
        "item", "tolist", "cpu", "nonzero", "__bool__", "__int__", "__float__", "unique", "to(cpu)",
        "__getitem__[bool]", "unique_consecutive",
    }  # fmt: skip
    assert sum(counter.calls.values()) == 11  # the dtype cast and the integer gather are not counted


def test_device_and_host_residency_give_the_same_scores(
    model: torch.nn.Module, features: dict[str, torch.Tensor]
) -> None:
    f = features
    image_idx = torch.randint(0, N_IMAGES, (500,), generator=torch.Generator().manual_seed(1))
    text_idx = torch.randint(0, N_TEXTS, (500,), generator=torch.Generator().manual_seed(2))
    scores = {}
    for residency in ("device", "host"):
        for dtype in (torch.float32, torch.bfloat16):
            scorer = PairScorer(
                model, f["image_embeds"].to(dtype), f["text_states"].to(dtype), f["text_mask"], CPU,
                pairs_per_call=48, residency=residency, plan_block=200,
            )  # type: ignore[arg-type]  # fmt: skip
            scores[residency, dtype] = scorer.score(image_idx, text_idx)
    assert torch.equal(scores["device", torch.float32], scores["host", torch.float32])
    assert torch.equal(scores["device", torch.bfloat16], scores["host", torch.bfloat16])
    assert not torch.equal(scores["device", torch.float32], scores["device", torch.bfloat16])


def test_residency_choice_and_call_budget_on_a_cpu() -> None:
    plan = plan_memory(FusionDims(768, 768, 12, 3072), 5000, 25010, 577, 256, 30)
    assert choose_residency(plan, CPU)["mode"] == "device"  # host memory is the CPU's memory
    assert choose_residency(plan, CPU, "host")["mode"] == "host"
    assert choose_residency(plan, CPU)["needed_mib"] == pytest.approx(
        (plan.image_tokens + plan.text_states + 2 * plan.itc_matrix + plan.call_bytes) / 2**20, abs=0.1
    )
    with pytest.raises(ValueError, match="residency must be one of"):
        choose_residency(plan, CPU, "gpu")
    assert call_budget(CPU) == (1024, 1024)
    assert call_budget(CPU, 300.0, 64) == (300.0, 64)
