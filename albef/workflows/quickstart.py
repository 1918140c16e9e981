"""The quickstart pipeline: the whole method on the synthetic world, each stage an ordinary ``albef`` command.

:func:`build_stages` lays out the stages (pretraining, then its second, ITM-only stage, then text assignment
-> NLVR² next to retrieval -> VQA -> SNLI-VE -> RefCOCO+-style grounding, and the Winoground- and
SugarCrepe-style probes of the two-stage pretrained model) with their epochs, precision and process layout;
:func:`run_pipeline` runs them as subprocesses, two at a time after pretraining; :func:`summarise` writes the one report against chance levels.
``albef quickstart`` (``albef.cli.quickstart``) parses the options and calls them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MINUTES = 15.0

EPOCHS = {
    "pretrain": 20,
    "binding": 20,
    "retrieval": 2,
    "vqa": 3,
    "ta": 4,
    "nlvr": 4,
    "ve": 4,
    "grounding": 2,
}
"""Epochs of each stage at the default budget (scaled by ``minutes / 15``, at least 1). Pretraining gets the
most: text assignment learns faster from a longer-pretrained model (75-78 % vs 66-70 % after 4 epochs from 20
vs 16 single-process pretraining epochs) and NLVR² follows it (58.8-60.2 % vs 54-56 % test). The ITM-only
``binding`` stage learns the swaps late (at 620 of its 1,240 steps they were not yet clearly above chance)."""

OVERRIDES = {
    "pretrain": [
        "model.vision.pos_embed_std=0.25",
        "data.itm_text_negatives=pretrain_negatives.json",
        "optim.loss_weights={itm: 4}",
    ],
    "vqa": ["model.distill=false"],
    "nlvr": ["model.distill=false"],
}
"""Settings the quickstart changes in a stage's preset. Pretraining draws the ViT's position embeddings as
strong as a patch's content (at timm's 0.02 they are 12x weaker and the fusion encoder cannot tell where things
stand), adds the world's paired hard captions to ITM and weights ITM 4x: the first stage of the two that put
ITM above chance on the swap probes (the ``binding`` stage, preset ``synthetic_pretrain_itm``, is the second),
at the zero-shot retrieval of the plain preset. They are overrides, not the preset's, because every synthetic
finetuning preset inherits ``synthetic_pretrain`` and a loss weight of ITM would reach their losses. VQA and
NLVR² finetune without the momentum teacher: its forward pass costs a quarter of their step time on the CPU,
and on this world NLVR² test accuracy was the same without it (56.1 % both, same text-assignment checkpoint).
Pretraining and retrieval keep momentum distillation."""


@dataclass
class Stage:
    """One ``albef`` command of the pipeline.

    Attributes:
        name: Stage name (also the folder under the output directory).
        argv: The ``albef`` arguments without the checkpoint (filled in when the stage starts).
        after: The stage whose newest checkpoint initialises this one.
        report: Path of the stage's test run report, relative to its folder.
        threads: Torch threads of each process.
        ranks: Processes; more than one runs the command under ``torch.distributed.run`` (DDP, gloo).
    """

    name: str
    argv: list[str]
    after: str | None
    report: str | None
    threads: int = 1
    ranks: int = 1
    wall_s: float = 0.0
    returncode: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cores(self) -> int:
        """CPU cores the stage keeps busy; a stage on more than one runs alone."""
        return self.threads * self.ranks


PRETRAINING = ("pretrain", "binding")
"""The stages that run as :func:`pretrain_layout` says (DDP ranks on two cores), each alone."""


def epochs_for(minutes: float) -> dict[str, int]:
    """Epochs of each stage for a time budget (the default budget gives :data:`EPOCHS`)."""
    scale = minutes / DEFAULT_MINUTES
    return {name: max(1, round(epochs * scale)) for name, epochs in EPOCHS.items()}


def resolve_quickstart_precision(name: str, threads: int = 1) -> str:
    """The precision of a process that runs on ``threads`` CPU threads.

    ``auto`` means ``amp_bf16`` for one-thread processes on a CPU that computes bf16 in hardware (1.5x the
    fp32 samples/s in pretraining steps on one thread), else ``fp32``. A two-thread process stays fp32: there
    bf16 autocast scaled poorly (0.33 s per step against fp32's 0.32). An explicit name applies everywhere.
    """
    if name != "auto":
        return name
    from albef.engine.precision import cpu_has_native_bf16

    return "amp_bf16" if threads == 1 and cpu_has_native_bf16() else "fp32"


def pretrain_layout(cores: int, precision: str) -> tuple[int, int]:
    """``(ranks, per-rank batch)`` of pretraining on ``cores`` CPU cores.

    Where the one-thread processes compute in bf16, pretraining runs as ``cores`` one-thread DDP ranks that
    split the preset's batch (2 x 16 = its 32, the same steps and lr): 1.25x the samples/s of one two-thread
    fp32 process (130 and 153 against 105 and 122 in two back-to-back pairs of 150 steps on a 2-core EPYC).
    Elsewhere it is one process with ``cores`` threads: without hardware bf16, when the batch does not split
    evenly, and on more than two cores (per-rank batches of 8 or less were never tried).
    """
    from albef.config import load_config

    batch = load_config("synthetic_pretrain").data.batch_size_train
    if 1 < cores <= 2 and batch % cores == 0 and resolve_quickstart_precision(precision) == "amp_bf16":
        return cores, batch // cores
    return 1, batch


def build_stages(
    out: Path,
    world: Path,
    size: str,
    seed: int,
    minutes: float,
    threads: int,
    precision: str = "fp32",
) -> list[Stage]:
    """The pipeline's stages in dependency order; ``precision`` is a ``--precision`` choice."""
    epochs = epochs_for(minutes)
    common = [
        f"data.root={world}",
        f"data.synthetic_size={size}",
        f"data.synthetic_seed={seed}",
        f"runtime.seed={seed}",
        "data.num_workers=0",
    ]

    ranks, per_rank_batch = pretrain_layout(threads, precision)

    def argv(command: Sequence[str], config: str, name: str, extra: Sequence[str] = ()) -> list[str]:
        process_threads = threads // ranks if name in PRETRAINING else 1
        sets = [
            *common,
            f"runtime.precision={resolve_quickstart_precision(precision, process_threads)}",
            f"optim.epochs={epochs[name]}",
            *OVERRIDES.get(name, []),
            *extra,
        ]
        return [*command, "--config", config, "--output-dir", str(out / name), "--no-progress"] + [
            arg for s in sets for arg in ("--set", s)
        ]

    def evaluate(name: str) -> list[str]:
        sets = [*common, f"runtime.precision={resolve_quickstart_precision(precision, 1)}"]
        return ["evaluate", name, "--config", f"synthetic_{name}", "--output-dir", str(out / name),
                "--no-progress", "--log-samples"] + [arg for s in sets for arg in ("--set", s)]  # fmt: skip

    batch = [f"data.batch_size_train={per_rank_batch}"] if ranks > 1 else []
    pretrain = argv(["pretrain"], "synthetic_pretrain", "pretrain", batch)
    binding = argv(["pretrain"], "synthetic_pretrain_itm", "binding", batch)
    # The longest chain (text assignment -> NLVR2) starts first, next to retrieval; VQA and SNLI-VE follow.
    return [
        Stage("pretrain", pretrain, None, None, threads // ranks, ranks),
        # The second pretraining stage (ITM alone on relation and swap pairs) feeds only the probes.
        Stage("binding", binding, "pretrain", None, threads // ranks, ranks),
        Stage("ta", argv(["pretrain-ta"], "synthetic_nlvr_pretrain", "ta"), "pretrain", None),
        Stage(
            "retrieval",
            argv(["finetune", "retrieval"], "synthetic_retrieval", "retrieval"),
            "pretrain",
            "reports/retrieval-synthetic-test.json",
        ),
        Stage("nlvr", argv(["finetune", "nlvr"], "synthetic_nlvr", "nlvr"), "ta", "nlvr_test_report.json"),
        Stage("vqa", argv(["finetune", "vqa"], "synthetic_vqa", "vqa"), "pretrain", "vqa_test_report.json"),
        Stage("ve", argv(["finetune", "ve"], "synthetic_ve", "ve"), "pretrain", "ve_test_report.json"),
        Stage(
            "grounding",
            argv(["finetune", "grounding"], "synthetic_grounding", "grounding"),
            "pretrain",
            "grounding-synthetic-test.json",
        ),
        # The compositional probes score the two-stage pretrained model itself (no finetuning): seconds each.
        Stage("winoground", evaluate("winoground"), "binding", "winoground-synthetic-test.json"),
        Stage("sugarcrepe", evaluate("sugarcrepe"), "binding", "sugarcrepe-synthetic-test.json"),
    ]


def newest_checkpoint(run_dir: Path) -> Path:
    """The newest training checkpoint of a finished stage."""
    from albef.engine.checkpointing import CHECKPOINT_DIR, list_checkpoints
    from albef.errors import AlbefError

    found = list_checkpoints(run_dir / CHECKPOINT_DIR)
    if not found:
        raise AlbefError(f"stage {run_dir.name} wrote no checkpoint under {run_dir / CHECKPOINT_DIR}")
    return found[-1]


def run_stage(stage: Stage, out: Path) -> Stage:
    """Run one stage as ``python -m albef ...``; its output goes to ``out/logs/<stage>.log``."""
    argv = list(stage.argv)
    if stage.after is not None:
        argv += ["--checkpoint", str(newest_checkpoint(out / stage.after))]
    log = out / "logs" / f"{stage.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(stage.threads), "MKL_NUM_THREADS": str(stage.threads)}
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={stage.ranks}"]
    command = [sys.executable, *(launcher if stage.ranks > 1 else []), "-m", "albef", *argv]
    tic = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(command) + "\n\n")
        fh.flush()
        proc = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
    stage.wall_s = time.perf_counter() - tic
    stage.returncode = proc.returncode
    return stage


def say(message: str) -> None:
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_pipeline(stages: list[Stage], out: Path, jobs: int) -> dict[str, Stage]:
    """Run ``stages`` respecting ``after`` (a stage starts once its parent succeeded), ``jobs`` at a time."""
    from albef.errors import AlbefError

    done: dict[str, Stage] = {}
    pending = list(stages)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Any, Stage] = {}
        while pending or running:
            exclusive = any(s.cores > 1 for s in running.values())
            for stage in [s for s in pending if s.after is None or s.after in done]:
                # A stage on several cores (pretraining) runs alone; the others share the cores.
                if exclusive or len(running) >= jobs or (stage.cores > 1 and running):
                    break
                pending.remove(stage)
                say(f"{stage.name}: started (log: {out / 'logs' / (stage.name + '.log')})")
                running[pool.submit(run_stage, stage, out)] = stage
                exclusive = stage.cores > 1
            finished = next((f for f in list(running) if f.done()), None)
            if finished is None:
                time.sleep(0.5)
                continue
            stage = running.pop(finished)
            finished.result()
            if stage.returncode != 0:
                for future in running:
                    future.cancel()
                raise AlbefError(
                    f"stage {stage.name} failed (exit {stage.returncode}); see {out / 'logs' / (stage.name + '.log')}"
                )
            done[stage.name] = stage
            say(f"{stage.name}: done in {stage.wall_s:.0f} s")
    return done


def summarise(stages: dict[str, Stage], out: Path, report_dir: Path, world: Path, args: Any) -> Path:
    """Gather the stage reports into the quickstart report; returns the Markdown path."""
    from albef.reporting.render import render
    from albef.reporting.schema import RunReport
    from albef.reporting.summary import (
        chance_levels,
        pipeline_report,
        plot_pipeline,
        read_loss_curves,
        summary_markdown,
    )

    manifest = json.loads((world / "manifest.json").read_text(encoding="utf-8"))
    reports = {
        name: RunReport.load(out / name / s.report) for name, s in stages.items() if s.report is not None
    }
    summary_path = out / "pretrain" / "summary.json"
    pretrain_summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else None
    config = {
        "minutes": args.minutes,
        "size": args.size,
        "seed": args.seed,
        "precision": args.precision,
        "epochs": epochs_for(args.minutes),
        "commands": {name: " ".join(stage.argv) for name, stage in stages.items()},
    }
    report = pipeline_report(
        reports, pretrain_summary, chance_levels(manifest), {n: s.wall_s for n, s in stages.items()}, config
    )
    if report_dir.exists():
        shutil.rmtree(report_dir)
    report_dir.mkdir(parents=True)
    report.save(report_dir / "quickstart.json")
    curves = {
        name: read_loss_curves(out / name / "metrics.jsonl", parts)
        for name, parts in (
            ("pretrain", ("itc_loss", "itm_loss", "mlm_loss")),
            ("binding", ("itm_loss",)),
            ("retrieval", ("itc_loss", "itm_loss")),
            ("vqa", ("vqa_loss",)),
            ("ta", ("ta_loss",)),
            ("nlvr", ("cls_loss",)),
            ("ve", ("cls_loss",)),
            ("grounding", ("itc_loss", "itm_loss")),
        )
        if (out / name / "metrics.jsonl").exists()
    }
    figures = plot_pipeline(report, curves, report_dir)
    for name, stage in stages.items():  # figures a stage draws itself (grounding's Grad-CAM heat maps)
        if stage.report is not None:
            for figure in sorted((out / name / stage.report).parent.glob("*-heatmaps.png")):
                figures.append(Path(shutil.copy2(figure, report_dir / figure.name)))
    for name, sub in reports.items():
        render(sub, report_dir / name)
        sub.save(report_dir / name / f"{name}.json")
    markdown = report_dir / "quickstart.md"
    markdown.write_text(summary_markdown(report, figures), encoding="utf-8")
    return markdown


def clear_previous_run(out: Path, stages: list[Stage]) -> None:
    """Remove the stage folders of an earlier quickstart in ``out``: each stage is a run that refuses a folder
    holding another run, and the quickstart owns these folders (its report is rewritten as well)."""
    previous = [out / stage.name for stage in stages if (out / stage.name).exists()]
    if previous:
        say(f"replacing the previous quickstart run in {out} ({', '.join(p.name for p in previous)})")
    for folder in previous:
        shutil.rmtree(folder)
