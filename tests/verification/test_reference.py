"""``albef verify-reference``: our models against the official reference fixtures, and its failure modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from albef.cli.main import main
from albef.models.builders import create_model, model_preset, two_image_layers
from albef.verification import (
    CheckRow,
    FixtureError,
    compare,
    load_fixture,
    model_config_from_fixture,
    verify_reference,
)
from albef.verification.outputs import pad_token_lists

COMPUTED = {
    "pretrain.pt": (
        "state_dict",
        "image_embeds",
        "text_embeds",
        "image_feat",
        "text_feat",
        "sim_i2t",
        "sim_t2i",
        "fusion_last_hidden_state",
        "itm_logits",
        "mlm_logits",
        "loss_ita",
        "loss_itm",
        "loss_mlm",
        "rng_trace",
        "after_forward",
        "loss_ita.seeded",
        "loss_itm.seeded",
        "loss_mlm.seeded",
        "conversions.retrieval",
        "conversions.vqa",
        "conversions.ve",
        "conversions.pretrain_nlvr",
        "conversions.nlvr",
    ),
    "retrieval.pt": (
        "state_dict",
        "itc_sims_matrix",
        "text_input_ids_as_used",
        "text_attention_mask_as_used",
        "train_loss_ita",
        "train_loss_itm",
        "train_rng_trace",
        "train_after_forward",
        "score_matrix_i2t",
        "score_matrix_t2i",
        "itm_eval",
        "itm_eval_ties_lower_index_first",
        "rerank.i2t.batched_vs_one_query",
        "rerank.t2i.batched_vs_one_query",
    ),
    "vqa.pt": (
        "state_dict",
        "question_states",
        "topk_ids",
        "topk_probs",
        "train_loss",
        "train_loss.ema_step",
    ),
    "nlvr.pt": ("state_dict", "logits", "train_loss"),
    "ve.pt": ("state_dict", "logits", "train_loss"),
}


@pytest.fixture(scope="module")
def official_tiny(reference_dir: Path) -> Path:
    path = reference_dir / "official_tiny"
    if not path.is_dir():
        pytest.skip(f"official_tiny fixtures not found at {path}")
    return path


def _table_rows(out: str) -> dict[tuple[str, str], str]:
    """(file, output) -> the rest of the printed table line."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].endswith(".pt"):
            rows[(parts[0], parts[1])] = " ".join(parts[2:])
    return rows


# -- the shipped fixtures ------------------------------------------------------------------------------------
def test_every_computed_output_passes(
    official_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "report" / "rows.json"
    assert main(["verify-reference", str(official_tiny), "--json", str(out_json)]) == 0
    table = _table_rows(capsys.readouterr().out)
    for file, outputs in COMPUTED.items():
        for output in outputs:
            assert " pass" in f" {table[(file, output)]}", (file, output, table.get((file, output)))
    assert not [row for row in table.values() if "skipped" in row]  # every shipped output is checked
    record = json.loads(out_json.read_text())
    assert record["exit_status"] == 0 and record["strict"] is False
    by_name = {(r["file"], r["output"]): r for r in record["rows"]}
    assert by_name[("pretrain.pt", "mlm_logits")]["status"] == "pass"
    assert 0 <= by_name[("pretrain.pt", "mlm_logits")]["max_abs_diff"] < 1e-5
    assert by_name[("vqa.pt", "topk_ids")]["max_abs_diff"] == 0
    assert all(r["status"] != "fail" for r in record["rows"])


def test_strict_turns_skips_into_failures(
    official_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = torch.load(official_tiny / "ve.pt", weights_only=True)
    data["outputs"]["unchecked_output"] = torch.zeros(2)  # an output no check is registered for
    torch.save(data, tmp_path / "ve.pt")
    assert main(["verify-reference", str(tmp_path), "--only", "ve"]) == 0
    assert "skipped: not implemented" in _table_rows(capsys.readouterr().out)[("ve.pt", "unchecked_output")]
    assert main(["verify-reference", str(tmp_path), "--strict", "--only", "ve"]) == 1
    table = _table_rows(capsys.readouterr().out)
    assert set(table) == {
        ("ve.pt", "state_dict"),
        ("ve.pt", "logits"),
        ("ve.pt", "train_loss"),
        ("ve.pt", "unchecked_output"),
    }
    assert table[("ve.pt", "unchecked_output")].startswith("- FAIL skipped under --strict")
    assert "pass" in table[("ve.pt", "logits")]


def test_only_naming_nothing_is_a_usage_error(
    official_tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify-reference", str(official_tiny), "--only", "pretrain.no_such_output"]) == 2
    assert "selects nothing" in capsys.readouterr().err


def test_tampered_output_fails(
    official_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = torch.load(official_tiny / "ve.pt", weights_only=True)
    logits = data["outputs"]["logits"].clone()
    logits[1, 2] += 1e-3
    data["outputs"]["logits"] = logits
    torch.save(data, tmp_path / "ve.pt")
    rows = verify_reference(tmp_path)
    row = next(r for r in rows if r.output == "logits")
    assert row.status == "fail" and row.max_abs_diff == pytest.approx(1e-3, rel=1e-2)
    assert "1 of 9 entries outside" in row.detail
    assert main(["verify-reference", str(tmp_path)]) == 1
    assert "FAIL" in _table_rows(capsys.readouterr().out)[("ve.pt", "logits")]


def test_state_dict_that_does_not_load_strictly_fails(official_tiny: Path, tmp_path: Path) -> None:
    data = torch.load(official_tiny / "ve.pt", weights_only=True)
    data["state_dict"] = {**data["state_dict"], "cls_head.9.weight": torch.zeros(1)}
    torch.save(data, tmp_path / "ve.pt")
    rows = {row.output: row for row in verify_reference(tmp_path)}
    assert rows["state_dict"].status == "fail" and "cls_head.9.weight" in rows["state_dict"].detail
    assert rows["logits"].status == "fail"  # no model, so nothing is computed ...
    assert rows["train_loss"].status == "fail"  # nor the training loss


def test_corrupt_and_unknown_files_are_failure_rows(
    official_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(official_tiny / "nlvr.pt", tmp_path / "nlvr.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a torch file")
    torch.save(
        {"config": {}, "state_dict": {}, "inputs": {}, "outputs": {}, "meta": {"model": "captioning"}},
        tmp_path / "captioning.pt",
    )
    assert main(["verify-reference", str(tmp_path), "--only", "nlvr"]) == 1
    table = _table_rows(capsys.readouterr().out)
    assert table[("broken.pt", "(file)")].startswith("- FAIL cannot read broken.pt")
    assert "unknown official model 'captioning'" in table[("captioning.pt", "(file)")]
    assert "pass" in table[("nlvr.pt", "logits")]


def test_empty_or_missing_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("no fixtures here")
    assert main(["verify-reference", str(tmp_path)]) == 2
    assert "no fixture files" in capsys.readouterr().err
    assert main(["verify-reference", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- config mapping --------------------------------------------------------------------------------------------
def test_fixture_config_maps_to_our_model_config(official_tiny: Path) -> None:
    pretrain = load_fixture(official_tiny / "pretrain.pt")
    cfg = model_config_from_fixture(pretrain.config, "pretrain")
    tiny = model_preset("albef_tiny")  # sized after these fixtures
    assert cfg.vision == tiny.vision
    assert cfg.text == tiny.text
    assert (cfg.embed_dim, cfg.queue_size, cfg.momentum, cfg.temp) == (16, 64, 0.995, 0.07)


def test_nlvr_and_vqa_overrides_are_our_builders_sizes(official_tiny: Path) -> None:
    nlvr = load_fixture(official_tiny / "nlvr.pt")
    assert nlvr.config["overrides"] == {"text_encoder.num_hidden_layers": 18}
    cfg = model_config_from_fixture(nlvr.config, "nlvr")
    assert two_image_layers(cfg.text) == 18
    assert len(create_model("nlvr", cfg).text_encoder.encoder.layer) == 18
    vqa = load_fixture(official_tiny / "vqa.pt")
    cfg = model_config_from_fixture(vqa.config, "vqa")
    decoder = create_model("vqa", cfg).text_decoder
    assert (len(decoder.encoder.layer), decoder.fusion_layer) == (6, 0)


def test_overrides_our_builders_do_not_make_are_rejected(official_tiny: Path) -> None:
    config = dict(load_fixture(official_tiny / "nlvr.pt").config)
    with pytest.raises(FixtureError, match="does not apply to task 've'"):
        model_config_from_fixture(config, "ve")
    config["overrides"] = {"text_encoder.num_hidden_layers": 16}
    with pytest.raises(FixtureError, match="builds 18"):
        model_config_from_fixture(config, "nlvr")
    config["overrides"] = {"text_encoder.hidden_size": 64}
    with pytest.raises(FixtureError, match="unknown config override"):
        model_config_from_fixture(config, "nlvr")


# -- pieces ------------------------------------------------------------------------------------------------
def test_compare_uses_the_readme_tolerances() -> None:
    ref = torch.tensor([0.0, 100.0])
    assert compare(ref + torch.tensor([9e-6, 9e-3]), ref).passed  # atol 1e-5 + rtol 1e-4 * |ref|
    assert not compare(ref + torch.tensor([2e-5, 0.0]), ref).passed
    assert not compare(torch.tensor([1, 3]), torch.tensor([1, 2])).passed  # integers exactly
    shape = compare(torch.zeros(2, 3), torch.zeros(3, 2))
    assert not shape.passed and "shape" in shape.detail
    nested = compare({"a": torch.ones(2), "b": 2.0}, {"a": torch.ones(2), "b": 2.5})
    assert not nested.passed and nested.max_abs_diff == 0.5 and nested.detail.startswith("b:")
    assert not compare({"a": 1}, {"a": 1, "b": 2}).passed


def test_pad_token_lists_pads_and_truncates_keeping_sep() -> None:
    ids, mask = pad_token_lists([[101, 5, 102], [101, 7, 8, 9, 102]], max_length=4, pad_id=0)
    assert ids.tolist() == [[101, 5, 102, 0], [101, 7, 8, 102]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_status_text() -> None:
    assert CheckRow("a.pt", "x", 0.0, "pass").status_text == "pass"
    assert CheckRow("a.pt", "x", 1.0, "fail", "why").status_text == "FAIL"
    assert CheckRow("a.pt", "x", None, "skipped", "not implemented").status_text == "skipped: not implemented"


# -- the grounding fixture (its own folder) ---------------------------------------------------------------------
def test_every_grounding_row_passes_under_strict(
    reference_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = reference_dir / "official_tiny_grounding"
    if not path.is_dir():
        pytest.skip(f"official_tiny_grounding not found at {path}")
    out_json = tmp_path / "rows.json"
    assert main(["verify-reference", str(path), "--strict", "--json", str(out_json)]) == 0
    rows = {(r["output"]): r for r in json.loads(out_json.read_text())["rows"]}
    assert all(r["status"] == "pass" for r in rows.values())
    for name in ("gradcam_itm.maps", "gradcam_itc.maps", "gradcam_itc_block0.maps", "grounding_eval.accuracy",
                 "gradcam_itc_block8_error", "grounding_eval.stale_first_result", "checkpoint_bare",
                 "compute_iou_table.11", "tokenizer.batch1.input_ids"):  # fmt: skip
        assert name in rows, name
    assert rows["grounding_eval.accuracy"]["max_abs_diff"] == 0
    assert "(exact)" in rows["grounding_eval.accuracy"]["detail"]
    capsys.readouterr()
