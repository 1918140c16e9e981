"""Recipes for the real datasets: check a local copy against its manifest and convert the official annotations.

``albef data prepare NAME --root DIR`` runs :func:`prepare` with the recipe's manifest (registered in
:data:`DATASETS`; see :mod:`albef.data.prepare.manifest`): it checks the raw files and image folders under the
data root, makes each output with the first manifest source whose inputs exist (the ALBEF release file, when
present, comes first: it is what the official runs used), reads every output back through its reader in
:mod:`albef.data.formats`, and compares its counts and images with the manifest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from albef.data.formats_base import PathLike
from albef.data.prepare.checks import (
    Finding,
    OutputResult,
    check_files,
    check_image_dirs,
    output_findings,
    verify_output,
)
from albef.data.prepare.converters import (
    ANSWER_LIST_SIZE,
    CONVERTERS,
    Payload,
    SourceInputs,
    build_answer_list,
    eval_layout,
    karpathy_groups,
    majority_answer,
    nlvr_albef_records,
    snli_ve_albef_records,
    train_layout,
    vg_albef_records,
    vqa_albef_records,
)
from albef.data.prepare.manifest import (
    DATASETS,
    DatasetRecipe,
    Manifest,
    load_manifest,
    manifest_path,
    parse_manifest,
)

__all__ = [
    "ANSWER_LIST_SIZE",
    "CONVERTERS",
    "DATASETS",
    "DatasetRecipe",
    "Finding",
    "Manifest",
    "OutputResult",
    "PrepareReport",
    "build_answer_list",
    "eval_layout",
    "karpathy_groups",
    "load_manifest",
    "majority_answer",
    "manifest_path",
    "nlvr_albef_records",
    "parse_manifest",
    "prepare",
    "snli_ve_albef_records",
    "train_layout",
    "vg_albef_records",
    "vqa_albef_records",
]


@dataclass(frozen=True)
class PrepareReport:
    """The outcome of :func:`prepare`."""

    name: str
    root: Path
    out: Path
    outputs: list[OutputResult]
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        """Whether no check failed."""
        return not any(f.level == "error" for f in self.findings)


# ----------------------------------------------------------------------------------------------- running
def write_payload(path: Path, payload: Payload) -> None:
    """Write JSON records (or copy a file) to ``path`` atomically: a temporary sibling, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (
        payload.read_bytes()
        if isinstance(payload, Path)
        else json.dumps(payload, ensure_ascii=False).encode()
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def run_sources(manifest: Manifest, root: Path, out: Path) -> tuple[dict[str, str], list[Finding]]:
    """Make every output that some source can make; returns output -> source label, and the converters' notes."""
    made: dict[str, str] = {}
    findings: list[Finding] = []
    for source in manifest.sources:
        wanted = {role: file for role, file in source.outputs.items() if file not in made}
        inputs = tuple(root / p for p in source.inputs)
        if not wanted or not all(p.exists() for p in inputs):
            continue
        optional = tuple(p if p.exists() else None for p in (root / q for q in source.optional_inputs))
        converted = CONVERTERS.get(source.converter)(SourceInputs(root, inputs, optional, source.options))
        findings.extend(Finding("note", f"{source.label}: {note}") for note in converted.notes)
        for role, file in wanted.items():
            if role in converted.payloads:
                write_payload(out / file, converted.payloads[role])
                made[file] = source.label
    return made, findings


def prepare(
    manifest: Manifest, root: PathLike, out: PathLike, *, convert: bool = True, images: bool = True
) -> PrepareReport:
    """Check a local copy of a dataset against its manifest and (unless ``convert=False``) convert it.

    Args:
        manifest: The recipe.
        root: The data root holding the raw files (``coco/``, ``vqa/``, ...).
        out: Where the converted files go (the presets expect ``<root>/data``).
        convert: Make the outputs from the raw files; ``False`` only checks what is already in ``out``.
        images: Check the image folders and that every referenced image exists.

    Returns:
        The report; ``report.ok`` is false if any check failed.
    """
    root_path, out_path = Path(root), Path(out)
    findings = check_files(manifest, root_path)
    findings += check_image_dirs(manifest, root_path) if images else []
    made: dict[str, str] = {}
    if convert:
        made, notes = run_sources(manifest, root_path, out_path)
        findings += notes
    results = []
    for spec in manifest.outputs:
        result = replace(verify_output(spec, root_path, out_path, images), source=made.get(spec.file))
        findings += output_findings(manifest, spec, result, root_path)
        results.append(result)
    return PrepareReport(manifest.name, root_path, out_path, results, findings)
