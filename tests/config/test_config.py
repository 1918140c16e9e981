"""Typed config: presets, YAML round trip, precedence and every error message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from albef.config import (
    ConfigError,
    ExperimentConfig,
    OptimConfig,
    dump_config,
    from_dict,
    list_presets,
    load_config,
    save_config,
    to_dict,
)
from albef.registry import UnknownNameError

# Values of the official configs/*.yaml (salesforce/ALBEF @ b9727e4), spec §6.1.
OFFICIAL = {
    "pretrain": dict(
        image_res=256, batch=64, lr=1e-4, epochs=30, warmup_lr=1e-5, warmup_epochs=20, min_lr=1e-5
    ),
    "retrieval_coco": dict(
        image_res=384, batch=32, lr=1e-5, epochs=5, warmup_lr=1e-5, warmup_epochs=1, min_lr=1e-6
    ),
    "retrieval_flickr": dict(
        image_res=384, batch=32, lr=1e-5, epochs=10, warmup_lr=1e-5, warmup_epochs=1, min_lr=1e-6
    ),
    "vqa": dict(image_res=384, batch=32, lr=2e-5, epochs=8, warmup_lr=1e-5, warmup_epochs=4, min_lr=1e-6),
    "nlvr_pretrain": dict(
        image_res=256, batch=64, lr=2e-5, epochs=1, warmup_lr=1e-5, warmup_epochs=1, min_lr=1e-5
    ),
    "nlvr": dict(image_res=384, batch=16, lr=2e-5, epochs=10, warmup_lr=1e-5, warmup_epochs=1, min_lr=1e-6),
    "ve": dict(image_res=384, batch=32, lr=2e-5, epochs=5, warmup_lr=1e-5, warmup_epochs=1, min_lr=1e-6),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_presets_reproduce_official_values(name: str) -> None:
    cfg = load_config(name)
    want = OFFICIAL[name]
    assert cfg.model.vision.image_res == want["image_res"]
    assert cfg.data.batch_size_train == want["batch"]
    assert cfg.optim.lr == pytest.approx(want["lr"])
    assert cfg.optim.weight_decay == pytest.approx(0.02)
    assert cfg.optim.epochs == want["epochs"]
    assert cfg.optim.warmup_lr == pytest.approx(want["warmup_lr"])
    assert cfg.optim.warmup_epochs == want["warmup_epochs"]
    assert cfg.optim.min_lr == pytest.approx(want["min_lr"])
    assert cfg.optim.schedule == "staircase"
    # BERT-base and ViT-B/16 sizes from configs/config_bert.json and models/vit.py.
    assert (cfg.model.text.hidden_size, cfg.model.text.num_layers, cfg.model.text.fusion_layer) == (
        768,
        12,
        6,
    )
    assert (cfg.model.vision.width, cfg.model.vision.depth, cfg.model.vision.patch_size) == (768, 12, 16)
    assert cfg.model.text.vocab_size == 30522 and cfg.model.text.layer_norm_eps == 1e-12


def test_official_task_specific_values() -> None:
    assert load_config("retrieval_coco").eval.k_test == 256
    assert load_config("retrieval_flickr").eval.k_test == 128
    vqa = load_config("vqa")
    assert vqa.eval.k_test == 128 and vqa.data.batch_size_test == 16
    assert vqa.data.train_files == ["data/vqa_train.json", "data/vqa_val.json", "data/vg_qa.json"]
    assert load_config("ve").model.alpha_warmup is False
    assert load_config("retrieval_coco").model.alpha_warmup is True
    pre = load_config("pretrain")
    assert (pre.model.queue_size, pre.model.momentum, pre.model.temp) == (65536, 0.995, 0.07)
    assert (pre.model.alpha, pre.model.mlm_probability, pre.model.embed_dim) == (0.4, 0.15, 256)
    assert "data/cc12m.json" in pre.data.train_files
    assert "data/cc12m.json" not in load_config("pretrain_4m").data.train_files


def test_every_preset_loads_and_synthetic_presets_are_small() -> None:
    names = list_presets()
    assert {"pretrain", "retrieval_coco", "vqa", "nlvr", "ve", "synthetic_pretrain"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name
        if name.startswith("synthetic_"):
            assert cfg.data.synthetic_size == "medium"
            assert cfg.model.text.hidden_size <= 256 and cfg.model.vision.image_res <= 64
            assert cfg.model.queue_size % cfg.data.batch_size_train == 0


def test_yaml_round_trip_is_lossless(tmp_path: Path) -> None:
    cfg = load_config("vqa", ["optim.betas=[0.8, 0.95]", "optim.clip_grad_norm=1.0"])
    path = tmp_path / "cfg.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert again.optim.betas == (0.8, 0.95)
    assert to_dict(again) == yaml.safe_load(dump_config(cfg))


def test_precedence_cli_over_file_over_base_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("base: retrieval_flickr\noptim:\n  epochs: 3\n  lr: 2e-5\n")
    cfg = load_config(path, ["optim.lr=5e-6"])
    assert cfg.optim.lr == pytest.approx(5e-6)  # CLI beats file
    assert cfg.optim.epochs == 3  # file beats base
    assert cfg.eval.k_test == 128  # base (retrieval_flickr) beats its own base (retrieval_coco)
    assert cfg.model.vision.image_res == 384  # from retrieval_coco
    assert cfg.runtime.seed == ExperimentConfig().runtime.seed  # defaults underneath


def test_loss_weights_and_position_std_from_the_command_line() -> None:
    cfg = load_config(
        "synthetic_pretrain", ["optim.loss_weights={itm: 4, mlm: 0}", "model.vision.pos_embed_std=0.25"]
    )
    assert cfg.optim.loss_weights == {"itm": 4.0, "mlm": 0.0}
    assert cfg.model.vision.pos_embed_std == 0.25
    assert load_config("synthetic_pretrain").optim.loss_weights == {}  # the official plain sum


def test_official_style_exponent_is_a_float(tmp_path: Path) -> None:
    # PyYAML reads "1e-4" (no dot) as a string; the official configs are written that way.
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-4\n")
    assert load_config(path).optim.lr == pytest.approx(1e-4)


def test_unknown_key_names_key_file_and_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  schedular: cosine\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "optim.schedular" in msg and str(path) in msg
    assert "valid keys:" in msg and "schedule" in msg and "warmup_lr" in msg


def test_unknown_top_level_section(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("trainer:\n  lr: 1\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'trainer' in section '<top>'.*valid keys: data, eval"
    ):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "expected", "given"),
    [
        ("optim.epochs=three", "expected int", "got str ('three')"),
        ("optim.epochs=2.5", "expected int", "got float (2.5)"),
        ("model.distill=1", "expected bool", "got int (1)"),
        ("runtime.precision=fp64", "expected one of 'fp32'", "got str ('fp64')"),
        ("data.train_files=abc", "expected list[str]", "got str ('abc')"),
        ("optim.betas=[0.9]", "expected tuple[float, float]", "got list ([0.9])"),
        ("data.val_file=3", "expected str or null", "got int (3)"),
        ("optim.loss_weights={itm: high}", "expected float", "got str ('high')"),
    ],
)
def test_wrong_type_names_key_expected_and_given(override: str, expected: str, given: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config("synthetic_pretrain", [override])
    msg = str(err.value)
    assert key in msg and expected in msg and given in msg
    assert "synthetic_pretrain.yaml" in msg  # names the file the value was layered onto


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optim: 3\n")
    with pytest.raises(ConfigError, match=r"section 'optim' must be a mapping, got int"):
        load_config(path)


def test_unknown_preset_lists_valid_ones() -> None:
    with pytest.raises(UnknownNameError) as err:
        load_config("retrieval_cocoo")
    assert "retrieval_cocoo" in str(err.value) and "retrieval_coco" in str(err.value)


def test_missing_file_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listing)


def test_circular_base_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular 'base' chain"):
        load_config(tmp_path / "a.yaml")


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        load_config(None, ["optim.lr"])


def test_from_dict_defaults_and_float_from_int() -> None:
    cfg = from_dict(OptimConfig, {"lr": 1, "epochs": 2})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.epochs == 2 and cfg.weight_decay == OptimConfig().weight_decay
