"""``albef quickstart``: stage plan, the scheduler (real subprocesses on cheap commands), failure reporting."""

from __future__ import annotations

from pathlib import Path

import pytest

from albef.cli.main import AlbefError
from albef.workflows.quickstart import (
    EPOCHS,
    Stage,
    build_stages,
    epochs_for,
    resolve_quickstart_precision,
    run_pipeline,
)


def test_the_default_budget_gives_the_default_epochs_and_scales_down_to_one() -> None:
    assert epochs_for(15) == EPOCHS
    half = epochs_for(7.5)
    assert half["pretrain"] == round(EPOCHS["pretrain"] / 2)
    assert min(epochs_for(0.1).values()) == 1


def test_stage_plan_chains_nlvr_after_text_assignment_and_everything_after_pretraining(
    tmp_path: Path,
) -> None:
    stages = {s.name: s for s in build_stages(tmp_path, Path("W"), "small", 3, 15, 2, "amp_bf16")}
    assert list(stages) == [
        "pretrain", "binding", "ta", "retrieval", "nlvr", "vqa", "ve", "grounding", "winoground", "sugarcrepe",
    ]  # fmt: skip
    assert stages["pretrain"].after is None and stages["pretrain"].cores == 2
    binding = stages["binding"]  # the second pretraining stage: ITM alone, from the first's checkpoint
    assert binding.after == "pretrain" and binding.cores == 2 and binding.report is None
    assert binding.argv[:3] == ["pretrain", "--config", "synthetic_pretrain_itm"]
    assert stages["nlvr"].after == "ta"
    assert {stages[n].after for n in ("retrieval", "vqa", "ta", "ve", "grounding")} == {"pretrain"}
    grounding = stages["grounding"].argv
    assert grounding[:4] == ["finetune", "grounding", "--config", "synthetic_grounding"]
    assert stages["grounding"].report == "grounding-synthetic-test.json"
    for probe in ("winoground", "sugarcrepe"):  # the probes evaluate the two-stage pretrained model as it is
        assert stages[probe].after == "binding" and stages[probe].argv[:2] == ["evaluate", probe]
        assert "--log-samples" in stages[probe].argv and not any(
            "optim.epochs" in a for a in stages[probe].argv
        )
    argv = stages["vqa"].argv
    assert argv[:3] == ["finetune", "vqa", "--config"] and "synthetic_vqa" in argv
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    expected = {"data.root=W", "data.synthetic_size=small", "data.synthetic_seed=3", "runtime.seed=3"}
    assert expected <= set(sets)
    for stage in stages.values():  # every stage trains and evaluates at the chosen precision
        assert "runtime.precision=amp_bf16" in stage.argv
    assert f"optim.epochs={EPOCHS['vqa']}" in sets
    assert argv[argv.index("--output-dir") + 1] == str(tmp_path / "vqa")


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, "amp_bf16"), (False, True, "amp_bf16"), (False, False, "fp32")],
)
def test_auto_precision_uses_bf16_autocast_only_where_the_cpu_computes_bf16(
    monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, expected: str
) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_quickstart_precision("auto") == expected
    assert resolve_quickstart_precision("auto", threads=2) == "fp32"  # bf16 does not scale to 2 threads
    assert resolve_quickstart_precision("fp32") == "fp32"  # an explicit choice is kept
    assert resolve_quickstart_precision("amp_bf16", threads=2) == "amp_bf16"


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_plan_splits_pretraining_over_ddp_ranks_only_with_hardware_bf16(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, native_bf16: bool
) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    stages = {s.name: s for s in build_stages(tmp_path, Path("W"), "small", 0, 15, 2, "auto")}

    def sets(name: str) -> list[str]:
        argv = stages[name].argv
        return [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]

    for name in ("pretrain", "binding"):
        pretrain = stages[name]
        if native_bf16:  # two one-thread bf16 ranks sharing the preset's batch of 32
            assert (pretrain.ranks, pretrain.threads) == (2, 1)
            assert {"runtime.precision=amp_bf16", "data.batch_size_train=16"} <= set(sets(name))
        else:  # one two-thread fp32 process with the preset's batch
            assert (pretrain.ranks, pretrain.threads) == (1, 2)
            assert "runtime.precision=fp32" in sets(name)
            assert not any(s.startswith("data.batch_size_train") for s in sets(name))
    first_stage = {"model.vision.pos_embed_std=0.25", "optim.loss_weights={itm: 4}"}
    assert first_stage <= set(sets("pretrain")) and not first_stage & set(sets("binding"))
    one_thread = "amp_bf16" if native_bf16 else "fp32"
    for name in ("ta", "retrieval", "nlvr", "vqa", "ve", "grounding", "winoground", "sugarcrepe"):
        assert (stages[name].ranks, stages[name].threads) == (1, 1)
        assert f"runtime.precision={one_thread}" in sets(name)
        assert ("model.distill=false" in sets(name)) == (name in ("vqa", "nlvr"))


def test_pretraining_splits_over_ranks_only_on_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from albef.workflows.quickstart import pretrain_layout

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert pretrain_layout(2, "auto") == (2, 16)
    assert pretrain_layout(1, "auto") == (1, 32)
    assert pretrain_layout(8, "auto") == (1, 32)  # one 8-thread process, not eight ranks of 4
    assert pretrain_layout(2, "fp32") == (1, 32)


def test_a_stage_with_several_ranks_runs_under_torch_distributed_run(tmp_path: Path) -> None:
    stage = Stage("ddp", ["ls", "tasks"], None, None, threads=1, ranks=2)
    done = run_pipeline([stage], tmp_path, jobs=2)
    assert done["ddp"].returncode == 0
    log = (tmp_path / "logs" / "ddp.log").read_text()
    first = log.splitlines()[0]
    assert "-m torch.distributed.run --standalone --nproc_per_node=2 -m albef ls tasks" in first
    assert log.count("nlvr_pretrain") == 2  # both ranks ran the command


def test_scheduler_runs_dependents_with_the_parents_newest_checkpoint(tmp_path: Path) -> None:
    # "first" is a real albef command; "second" gets --checkpoint of first's newest checkpoint.
    checkpoints = tmp_path / "first" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for step in (2, 10):
        (checkpoints / f"step-{step:08d}.pt").write_bytes(b"")
    stages = [
        Stage("first", ["ls", "tasks"], None, None),
        Stage("second", ["config", "show", "--config", "synthetic_vqa", "--help"], "first", None),
        Stage("third", ["ls", "configs"], None, None),
    ]
    done = run_pipeline(stages, tmp_path, jobs=2)
    assert set(done) == {"first", "second", "third"}
    assert all(s.returncode == 0 and s.wall_s > 0 for s in done.values())
    log = (tmp_path / "logs" / "second.log").read_text()
    assert log.startswith("$ ") and f"--checkpoint {checkpoints / 'step-00000010.pt'}" in log.splitlines()[0]
    assert "pretrain" in (tmp_path / "logs" / "first.log").read_text()  # the command's own output


def test_a_failing_stage_stops_the_pipeline_naming_its_log(tmp_path: Path) -> None:
    stages = [
        Stage("broken", ["config", "show", "--config", "no_such_preset"], None, None),
        Stage("child", ["ls", "tasks"], "broken", None),
    ]
    with pytest.raises(AlbefError, match=r"stage broken failed \(exit 2\); see .*broken\.log"):
        run_pipeline(stages, tmp_path, jobs=1)
    assert not (tmp_path / "logs" / "child.log").exists()


def test_the_summary_gathers_a_grounding_stage_with_its_chance_and_heat_maps(tmp_path: Path) -> None:
    """The stage's report gives the metrics and the chance of a random proposal; its heat maps are copied."""
    import json
    from argparse import Namespace

    from albef.reporting.schema import RunReport
    from albef.workflows.quickstart import summarise

    out, world = tmp_path / "runs", tmp_path / "world"
    (out / "grounding").mkdir(parents=True)
    world.mkdir()
    (world / "manifest.json").write_text(json.dumps({"chance": {}}))
    report = RunReport(kind="evaluation", task="grounding", dataset="synthetic", split="test")
    report.add_metric("testA_d", 33.0, n=149, interval=(26.0, 40.0))
    report.add_metric("testB_d", 21.0, n=149, interval=(15.0, 28.0))
    report.extra["chance"] = {"testA_d": 19.7, "testB_d": 19.4}
    report.save(out / "grounding" / "grounding-synthetic-test.json")
    (out / "grounding" / "grounding-synthetic-test-heatmaps.png").write_bytes(b"\x89PNG heat maps")
    stage = Stage(
        "grounding", ["finetune", "grounding"], "pretrain", "grounding-synthetic-test.json", wall_s=31.0
    )
    args = Namespace(minutes=15, size="medium", seed=0, precision="auto")
    markdown = summarise({"grounding": stage}, out, tmp_path / "reports", world, args)
    summary = RunReport.load(tmp_path / "reports" / "quickstart.json")
    assert summary.extra["chance"] == {"grounding.testA_d": 19.7, "grounding.testB_d": 19.4}
    assert summary.extra["above_chance"] == {"grounding.testA_d": True, "grounding.testB_d": False}
    page = markdown.read_text()
    assert "![grounding-synthetic-test-heatmaps](grounding-synthetic-test-heatmaps.png)" in page
    copied = tmp_path / "reports" / "grounding-synthetic-test-heatmaps.png"
    assert copied.read_bytes() == b"\x89PNG heat maps"
