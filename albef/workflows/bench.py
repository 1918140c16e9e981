"""The model benchmark: throughput, latency, FLOPs and MFU of the inference stages of a preset.

Four stages of the retrieval model (random weights, eval mode, ``torch.inference_mode``) are timed for
every batch size and precision, on synthetic inputs (random images; ``[CLS] words [PAD]...`` token ids of
lengths ``L/2..L``):

| stage | what one call runs | item |
|---|---|---|
| ``image_encode`` | ``encode_image``: ViT over all patches, ``vision_proj`` of the [CLS], L2 norm | image |
| ``text_encode`` | ``encode_text``: embeddings, text-mode layers, ``text_proj``, L2 norm | text |
| ``fusion_itm`` | ``fuse`` of given text states with given image tokens + ``itm_logits`` | pair |
| ``itm_rerank`` | retrieval's re-ranking: 1 image against B precomputed texts (ITC scores, top-B, gather the
  candidates' states, the image tokens expanded to B rows, ``fuse``, ITM "match" score) | pair |

Precisions: ``fp32``; ``cast_bf16`` / ``cast_fp16``: weights and images cast to that dtype (pure low-precision
inference, the fastest way to evaluate a fixed model); ``amp_bf16`` / ``amp_fp16``: fp32 weights under
``torch.autocast`` (the names training and ``resolve_precision`` use). The fp16 variants need CUDA.

The result is one :class:`RunReport` (``kind="benchmark"``, ``task="model"``) with a stage per
``{stage}/{precision}/bs{B}``. Nothing here prints; progress goes to an optional callback.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from albef.config.schema import ModelConfig
from albef.models.albef import ContrastiveALBEF, TextEncoding
from albef.models.builders import MODEL_PRESETS, create_model, model_preset
from albef.reporting import flops
from albef.reporting.environment import collect_environment, device_name, utc_now_iso
from albef.reporting.measure import StageTimer
from albef.reporting.schema import RunReport, StageStats

STAGE_ITEMS = {"image_encode": "image", "text_encode": "text", "fusion_itm": "pair", "itm_rerank": "pair"}
"""Stage -> what one item is, in the order the stages run."""

CAST_DTYPES = {"fp32": torch.float32, "cast_bf16": torch.bfloat16, "cast_fp16": torch.float16}
AUTOCAST_DTYPES = {"amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}
PRECISIONS = (*CAST_DTYPES, *AUTOCAST_DTYPES)
CUDA_ONLY = ("cast_fp16", "amp_fp16")
CLS_ID, FIRST_WORD_ID = 101, 104
"""BERT's [CLS]; the first id after the special tokens (random words are drawn from there on)."""

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, stage_key)``, called before each stage is timed."""


@dataclasses.dataclass
class ModelBenchConfig:
    """What ``albef bench model`` measures.

    Attributes:
        preset: Model preset (``albef_tiny`` or ``tiny``; ``albef ls models``).
        batch_sizes: Items per call; each stage runs at every one.
        precisions: See the module docstring.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        image_res: Image side (a multiple of the patch size); ``None`` keeps the preset's.
        text_len: Padded text length ``L``.
        warmup: Untimed calls before each stage.
        iters: Timed calls of each stage.
        seed: Seed of the weights and the inputs.
        count_flops: Count FLOPs per item (one extra call per stage, on the uncompiled model).
        compile: ``torch.compile`` the image encoder and every BERT layer (:func:`albef.engine.compile.compile_model`,
            what ``runtime.compile`` does) before timing; the warm-up calls compile each batch size.
    """

    preset: str
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    precisions: tuple[str, ...] = ("fp32", "cast_bf16")
    device: str = "auto"
    image_res: int | None = None
    text_len: int = 30
    warmup: int = 3
    iters: int = 20
    seed: int = 0
    count_flops: bool = True
    compile: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists)."""
        data = dataclasses.asdict(self)
        return {**data, "batch_sizes": list(self.batch_sizes), "precisions": list(self.precisions)}


@dataclasses.dataclass
class BenchInputs:
    """One synthetic batch: images (B, 3, R, R), token ids and 0/1 mask (B, L)."""

    images: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


# -- configuration ------------------------------------------------------------------------------------------
def resolve_preset_name(name: str) -> str:
    """``tiny`` -> ``albef_tiny`` when only the prefixed name is registered; other names are kept."""
    if name not in MODEL_PRESETS and f"albef_{name}" in MODEL_PRESETS:
        return f"albef_{name}"
    return name


def stage_key(stage: str, precision: str, batch_size: int) -> str:
    """The report key of one measurement: ``image_encode/cast_bf16/bs32``."""
    return f"{stage}/{precision}/bs{batch_size}"


def bench_model_config(preset: str, image_res: int | None = None) -> ModelConfig:
    """The preset's model config at ``image_res``.

    The weights are random, so the model is simply built for the new grid: its position embedding has one
    row per patch of ``image_res`` (pretrained weights would go through ``resize_pos_embed`` instead).
    """
    cfg = model_preset(resolve_preset_name(preset))
    if image_res is None:
        return cfg
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, image_res=image_res))


def validate(config: ModelBenchConfig, cfg: ModelConfig, device: torch.device) -> None:
    """Raise ``ValueError`` naming the first setting that cannot run."""
    unknown = [p for p in config.precisions if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precision {unknown[0]!r}; valid: {', '.join(PRECISIONS)}")
    if device.type != "cuda" and any(p in CUDA_ONLY for p in config.precisions):
        raise ValueError(f"precisions {', '.join(CUDA_ONLY)} need a CUDA device")
    if not config.batch_sizes or min(config.batch_sizes) < 1:
        raise ValueError("batch sizes must be a non-empty list of positive integers")
    if config.iters < 1 or config.warmup < 0:
        raise ValueError("iters must be >= 1 and warmup >= 0")
    if cfg.vision.image_res % cfg.vision.patch_size:
        raise ValueError(
            f"image_res {cfg.vision.image_res} is not a multiple of the patch size {cfg.vision.patch_size}"
        )
    if not 2 <= config.text_len <= cfg.text.max_position_embeddings:
        raise ValueError(
            f"text_len must be in [2, {cfg.text.max_position_embeddings}], got {config.text_len}"
        )


# -- model, inputs and stage calls ------------------------------------------------------------------------------
def build_bench_model(cfg: ModelConfig, seed: int, device: torch.device) -> ContrastiveALBEF:
    """The retrieval model with seeded random weights, in eval mode on ``device``."""
    torch.manual_seed(seed)
    model = create_model("retrieval", cfg)
    assert isinstance(model, ContrastiveALBEF)
    return model.to(device).eval()


def model_for_precision(master: ContrastiveALBEF, precision: str) -> ContrastiveALBEF:
    """``master`` itself for fp32 and autocast precisions, a copy cast to bf16/fp16 for the cast_* ones."""
    dtype = CAST_DTYPES.get(precision, torch.float32)
    return master if dtype == torch.float32 else copy.deepcopy(master).to(dtype)


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """``inference_mode`` plus, for ``amp_*`` precisions, autocast to their dtype."""
    autocast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if precision in AUTOCAST_DTYPES:
        autocast = torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])
    with torch.inference_mode(), autocast:
        yield


def make_inputs(cfg: ModelConfig, batch: int, text_len: int, seed: int, device: torch.device) -> BenchInputs:
    """Random images and ``[CLS] words [PAD]...`` texts of lengths in ``[text_len/2, text_len]``.

    The first text has exactly ``text_len`` tokens, so the batch is padded to ``text_len``.
    """
    gen = torch.Generator().manual_seed(seed)
    res = cfg.vision.image_res
    images = torch.randn(batch, 3, res, res, generator=gen)
    lengths = torch.randint(text_len // 2, text_len + 1, (batch,), generator=gen)
    lengths[0] = text_len
    ids = torch.randint(FIRST_WORD_ID, cfg.text.vocab_size, (batch, text_len), generator=gen)
    ids[:, 0] = CLS_ID
    mask = (torch.arange(text_len)[None] < lengths[:, None]).long()
    return BenchInputs(images.to(device), (ids * mask).to(device), mask.to(device))


def stage_calls(model: ContrastiveALBEF, x: BenchInputs) -> dict[str, Callable[[], object]]:
    """One call of each stage on ``x`` (call inside :func:`precision_context`; see the module docstring).

    The fusion stages get text states and image tokens computed here once, as evaluation caches them.
    """
    text = model.encode_text(x.input_ids, x.attention_mask)
    image = model.encode_image(x.images)
    batch = x.images.shape[0]

    def rerank() -> torch.Tensor:
        # 1 image x B candidate texts, as retrieval re-ranks the ITC top-k of each image.
        scores = image.feat[:1] @ text.feat.T  # (1, B)
        top = scores[0].topk(batch).indices  # (B,)
        candidates = TextEncoding(text.states[top], text.mask[top], text.feat[top])
        tokens = image.embeds[:1].expand(batch, -1, -1)  # (B, 1 + N, Dv)
        return model.itm_logits(model.fuse(candidates, tokens))[:, 1]

    return {
        "image_encode": lambda: model.encode_image(x.images),
        "text_encode": lambda: model.encode_text(x.input_ids, x.attention_mask),
        "fusion_itm": lambda: model.itm_logits(model.fuse(text, image.embeds)),
        "itm_rerank": rerank,
    }


# -- measurement ----------------------------------------------------------------------------------------------
def add_flops(stats: StageStats, fn: Callable[[], object], device_name: str, compute: str) -> StageStats:
    """Fill ``flops_per_item``, ``achieved_tflops`` and ``mfu`` of ``stats`` by counting one call of ``fn``."""
    per_item = flops.flops_per_item(fn, stats.batch_size)
    achieved = per_item * stats.items_per_s
    return dataclasses.replace(
        stats,
        flops_per_item=per_item,
        achieved_tflops=achieved / flops.TERA,
        mfu=flops.mfu(achieved, device_name, compute),
    )


def _bench_precision(
    master: ContrastiveALBEF,
    cfg: ModelConfig,
    config: ModelBenchConfig,
    precision: str,
    timer: StageTimer,
    on_stage: Callable[[str], None],
) -> dict[str, StageStats]:
    """Every stage at every batch size in one precision."""
    device = timer.device
    model = model_for_precision(master, precision)
    timed_model = model
    if config.compile:  # a compiled copy is timed; FLOPs are counted on the eager model (same operations)
        from albef.engine.compile import compile_model

        timed_model = copy.deepcopy(model)
        compile_model(timed_model)
    image_dtype = CAST_DTYPES.get(precision, torch.float32)
    name = device_name(device)
    compute = flops.compute_precision(precision, allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    results = {}
    for batch in config.batch_sizes:
        x = make_inputs(cfg, batch, config.text_len, config.seed, device)
        x = dataclasses.replace(x, images=x.images.to(image_dtype))
        with precision_context(precision, device):
            counted = stage_calls(model, x)
            for stage, fn in stage_calls(timed_model, x).items():
                key = stage_key(stage, precision, batch)
                on_stage(key)
                item = STAGE_ITEMS[stage]
                stats = timer.measure(
                    key, fn, batch, iters=config.iters, warmup=config.warmup, item=item, precision=precision
                )
                results[key] = (
                    add_flops(stats, counted[stage], name, compute) if config.count_flops else stats
                )
    return results


def run_model_bench(config: ModelBenchConfig, progress: ProgressFn | None = None) -> RunReport:
    """Time every stage of ``config`` and return the benchmark's :class:`RunReport`.

    Raises:
        ValueError: A setting that cannot run (unknown precision, fp16 on CPU, bad sizes).
    """
    from albef.engine.precision import resolve_device

    start_time, start = utc_now_iso(), time.perf_counter()
    device = resolve_device(config.device)
    cfg = bench_model_config(config.preset, config.image_res)
    validate(config, cfg, device)
    master = build_bench_model(cfg, config.seed, device)
    timer = StageTimer(device)
    keys = [stage_key(s, p, b) for p in config.precisions for b in config.batch_sizes for s in STAGE_ITEMS]
    stages: dict[str, StageStats] = {}
    done = itertools.count()

    def on_stage(key: str) -> None:
        if progress is not None:
            progress(next(done), len(keys), key)

    for precision in config.precisions:
        stages.update(_bench_precision(master, cfg, config, precision, timer, on_stage))
    return RunReport(
        kind="benchmark",
        task="model",
        dataset="synthetic-inputs",
        model_preset=resolve_preset_name(config.preset),
        stages=stages,
        memory=timer.peak_memory(),
        environment=collect_environment(
            device, ",".join(config.precisions), config.seed, start_time, time.perf_counter() - start
        ),
        config={"bench": config.to_dict(), "model": dataclasses.asdict(cfg)},
        extra=bench_notes(cfg, config, device),
    )


def bench_notes(cfg: ModelConfig, config: ModelBenchConfig, device: torch.device) -> dict[str, Any]:
    """What a reader of the report needs to interpret the stages."""
    return {
        "image_res": cfg.vision.image_res,
        "compiled": config.compile,
        "text_len": config.text_len,
        "text_lengths": {
            f"bs{b}": make_inputs(cfg, b, config.text_len, config.seed, torch.device("cpu"))
            .attention_mask.sum(1)
            .tolist()
            for b in config.batch_sizes
        },
        "stages": {
            "image_encode": "encode_image (ViT, vision_proj, L2 norm); item = image",
            "text_encode": "encode_text (text-mode layers, text_proj, L2 norm); item = text",
            "fusion_itm": "fuse given text states with given image tokens + itm_logits; item = pair",
            "itm_rerank": "1 image x B cached texts: ITC top-B, gather, fuse, ITM match score; item = pair",
        },
        "precisions": "cast_*: weights and images cast; amp_*: fp32 weights under autocast",
        "flops": "torch.utils.flop_counter over one call (matmul/conv/attention), divided by items",
        "allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32) if device.type == "cuda" else None,
    }
