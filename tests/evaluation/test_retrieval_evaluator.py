"""The retrieval evaluator on the small synthetic world: the official pipeline, reports, the feature cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from albef.config import ExperimentConfig, load_config
from albef.data.records import RetrievalEvalSet
from albef.engine.precision import resolve_precision
from albef.evaluation import retrieval as retrieval_module
from albef.evaluation.encode import encode_split
from albef.evaluation.feature_cache import FeatureCache, cache_key, data_fingerprint
from albef.evaluation.metrics import OFFICIAL_KEYS, fill_scores, retrieval_metrics, topk_candidates
from albef.evaluation.rerank import one_query_rerank
from albef.evaluation.retrieval import RetrievalEvaluator, read_eval_split, settings_from_config
from albef.models import create_model
from albef.models.albef import ALBEFRetrieval
from albef.tasks.data import build_tokenizer, data_path
from tests.engine import TINY_OVERRIDES, small_world

K = 8
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> ExperimentConfig:
    world = small_world(tmp_path_factory)
    return load_config(
        "synthetic_retrieval",
        [f"data.root={world}", "data.synthetic_size=small", *TINY_OVERRIDES, f"eval.k_test={K}"],
    )


@pytest.fixture(scope="module")
def model(cfg: ExperimentConfig) -> ALBEFRetrieval:
    torch.manual_seed(0)
    return create_model("retrieval", cfg.model).eval()  # type: ignore[return-value]


@pytest.fixture(scope="module")
def split(cfg: ExperimentConfig) -> RetrievalEvalSet:
    return read_eval_split(data_path(cfg.data, str(cfg.data.test_file)))


def evaluator(
    cfg: ExperimentConfig, split: RetrievalEvalSet, precision: str = "fp32", **kwargs: Any
) -> RetrievalEvaluator:
    settings = settings_from_config(cfg, **kwargs.pop("settings", {}))
    return RetrievalEvaluator(
        split,
        data_path(cfg.data, cfg.data.image_root),
        build_tokenizer(cfg.data),
        resolve_precision(precision, CPU),
        settings,
        **kwargs,
    )


@pytest.fixture(scope="module")
def result(cfg: ExperimentConfig, split: RetrievalEvalSet, model: ALBEFRetrieval) -> Any:
    return evaluator(cfg, split).run(model)


def test_evaluator_equals_the_official_pipeline(
    cfg: ExperimentConfig, split: RetrievalEvalSet, model: ALBEFRetrieval, result: Any
) -> None:
    """Encode, ITC, top k, one fusion call per query, -100 elsewhere: the same matrices and metrics."""
    f = encode_split(
        model, split, data_path(cfg.data, cfg.data.image_root), build_tokenizer(cfg.data),
        resolve_precision("fp32", CPU), cfg.model.vision.image_res,
    )  # fmt: skip
    assert f.image_embeds is not None and f.text_states is not None
    sims = f.image_feat @ f.text_feat.T
    expected = []
    for direction, matrix in (("i2t", sims), ("t2i", sims.T)):
        _, candidates = topk_candidates(matrix, K)
        loop = one_query_rerank(model, f.image_embeds, f.text_states, f.text_mask, candidates, direction)  # type: ignore[arg-type]
        expected.append(fill_scores(tuple(matrix.shape), torch.arange(matrix.shape[0]), candidates, loop))  # type: ignore[arg-type]
    assert torch.equal(result.outputs["scores_i2t"], expected[0])
    assert torch.equal(result.outputs["scores_t2i"], expected[1])
    assert result.values() == retrieval_metrics(expected[0], expected[1], split.img2txt, split.txt2img)


def test_host_residency_gives_the_device_resident_evaluation(
    cfg: ExperimentConfig, split: RetrievalEvalSet, model: ALBEFRetrieval, result: Any
) -> None:
    """Features staged from host memory per call (``--residency host``): the same matrices and metrics."""
    staged = evaluator(cfg, split, settings={"residency": "host"}).run(model)
    assert result.extra["residency"]["mode"] == "device" and staged.extra["residency"]["mode"] == "host"
    for key in ("scores_i2t", "scores_t2i", "itc"):
        assert torch.equal(staged.outputs[key], result.outputs[key])
    assert staged.values() == result.values()


def test_result_carries_metrics_stages_and_plan(split: RetrievalEvalSet, result: Any) -> None:
    report = result.to_report(task="retrieval", dataset="synthetic", split="test")
    assert [k for k in report.metrics if report.metrics[k].unit == "%"] == list(OFFICIAL_KEYS)
    assert not report.metrics["txt_mean_rank"].higher_is_better
    for key in OFFICIAL_KEYS:  # images resampled with their captions: n counts the queries of each recall
        metric = report.metrics[key]
        assert metric.n == (split.num_images if key.startswith("txt_") else split.num_texts), key
        assert metric.ci_low is not None and metric.ci_high is not None
        assert metric.ci_low <= metric.value <= metric.ci_high, key
    assert {"image_encode", "text_encode", "itc_similarity", "topk", "itm_rerank"} <= set(report.stages)
    assert report.stages["image_encode"].items == split.num_images
    assert report.stages["text_encode"].items == split.num_texts
    assert report.stages["itm_rerank"].items == report.extra["pairs_scored"]
    assert report.extra["pairs_requested"] == (split.num_images + split.num_texts) * K
    assert report.extra["memory_plan"]["pairs_per_call"] >= 1
    assert report.extra["chance"]["img_r1"] == pytest.approx(100 / split.num_images)
    assert result.n_samples == split.num_images + split.num_texts


def test_itc_only_and_itm_plus_itc(
    cfg: ExperimentConfig, split: RetrievalEvalSet, model: ALBEFRetrieval, result: Any
) -> None:
    itc = evaluator(cfg, split, settings={"itc_only": True}).run(model)
    assert torch.equal(itc.outputs["scores_i2t"], itc.outputs["itc"])
    assert "itm_rerank" not in itc.stages
    both = evaluator(cfg, split, settings={"score": "itm+itc"}).run(model)
    kept = result.outputs["scores_i2t"] != -100.0
    diff = both.outputs["scores_i2t"][kept] - result.outputs["scores_i2t"][kept]
    assert torch.allclose(diff, result.outputs["itc"][kept], atol=1e-6)


@pytest.mark.parametrize(("precision", "feature_dtype"), [("amp_bf16", "fp32"), ("fp32", "bf16")])
def test_bf16_autocast_and_bf16_features_stay_close(
    cfg: ExperimentConfig, split: RetrievalEvalSet, model: ALBEFRetrieval, result: Any, precision: str,
    feature_dtype: str,
) -> None:  # fmt: skip
    """Image tokens kept in bf16 (half the memory) or bf16 autocast: scores agree to bf16 rounding."""
    low = evaluator(cfg, split, precision, settings={"feature_dtype": feature_dtype}).run(model)
    both = (low.outputs["scores_i2t"] != -100.0) & (result.outputs["scores_i2t"] != -100.0)
    assert both.sum() >= 0.8 * split.num_images * K  # nearly the same candidates
    diff = (low.outputs["scores_i2t"][both] - result.outputs["scores_i2t"][both]).abs().max()
    assert float(diff) < 0.05


# -- the feature cache -------------------------------------------------------------------------------------------
def key_for(cfg: ExperimentConfig, split: RetrievalEvalSet, **settings: Any) -> str:
    encoding = settings_from_config(cfg, **settings).encoding()
    return cache_key(
        "0" * 64, {"width": 32}, data_fingerprint(split, data_path(cfg.data, cfg.data.image_root)), encoding
    )


def test_feature_cache_miss_then_hit(
    cfg: ExperimentConfig, split: RetrievalEvalSet, model: ALBEFRetrieval, result: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cache, key = FeatureCache(tmp_path), key_for(cfg, split)
    first = evaluator(cfg, split, cache=cache, cache_key=key).run(model)
    assert first.extra["cache"] == "miss" and cache.path(key).is_file()

    def no_encoding(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cache hit must not encode")

    monkeypatch.setattr(retrieval_module, "encode_split", no_encoding)
    second = evaluator(cfg, split, cache=FeatureCache(tmp_path), cache_key=key).run(model)
    assert second.extra["cache"] == "hit" and "image_encode" not in second.stages
    assert torch.equal(second.outputs["scores_t2i"], result.outputs["scores_t2i"])


def test_feature_cache_keys_and_unusable_entries(
    cfg: ExperimentConfig, split: RetrievalEvalSet, model: ALBEFRetrieval, tmp_path: Path
) -> None:
    cache = FeatureCache(tmp_path)
    itc_key = key_for(cfg, split, itc_only=True)
    assert itc_key != key_for(cfg, split) != key_for(cfg, split, feature_dtype="bf16")
    assert key_for(cfg, split) != key_for(cfg, split, image_res=64)
    evaluator(cfg, split, settings={"itc_only": True}, cache=cache, cache_key=itc_key).run(model)
    assert cache.load(itc_key, need_tokens=False) is not None and cache.status == "hit"
    assert cache.load(itc_key, need_tokens=True) is None and cache.status == "stale"  # no tokens kept
    cache.path(itc_key).write_bytes(b"not a torch file")
    assert cache.load(itc_key, need_tokens=False) is None and cache.status == "stale"
    assert cache.load("f" * 64, need_tokens=False) is None and cache.status == "miss"


def test_data_fingerprint_follows_captions_and_image_files(
    cfg: ExperimentConfig, split: RetrievalEvalSet
) -> None:
    root = data_path(cfg.data, cfg.data.image_root)
    before = data_fingerprint(split, root)
    edited = RetrievalEvalSet(split.images, ["x", *split.texts[1:]], split.img2txt, split.txt2img)
    assert data_fingerprint(edited, root) != before
    image = root / split.images[0]
    stat = image.stat()
    try:
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert data_fingerprint(split, root) != before
    finally:
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert data_fingerprint(split, root) == before
