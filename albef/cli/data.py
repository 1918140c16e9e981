"""``albef data {synth,prepare,shards,list}``: the embedded synthetic world, the recipes for the real datasets,
WebDataset shards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from albef.errors import DataError

SYNTH_DESCRIPTION = """\
Generate the embedded synthetic image-text world into --out: images of 2-4 coloured shapes on a textured
background, with captions, VQA questions, NLVR2 statements, SNLI-VE hypotheses and RefCOCO+-style referring
expressions computed from what the images show, written in the official ALBEF formats (plus COCO-caption, VQA
v2 and lil-lab NLVR2 versions of the test splits), Winoground- and SugarCrepe-style compositional probes
(probes/), a WordPiece vocabulary (tokenizer/vocab.txt) and manifest.json (checksums, counts and the chance
level of every task). The same --seed, --size and --image-size give byte-identical files. If --out
already holds the world for these parameters it is reused; otherwise it is generated in a temporary sibling
directory and moved into place, so an interrupted run never leaves a half world behind.
"""


def register(subparsers: Any) -> None:
    """Add the ``data`` command and its actions to the top-level subparsers."""
    from albef.data.synthetic import DEFAULT_IMAGE_SIZE, SIZES

    parser = subparsers.add_parser(
        "data",
        help="data utilities: synthetic world (synth), real datasets (prepare, list), tar shards (shards)",
        description="Data utilities. Actions: synth (generate the embedded synthetic world), prepare (check a "
        "local copy of a real dataset and convert its official annotations), shards (write a JSON list and its "
        "images as WebDataset tar shards), list (the real-dataset recipes).",
    )
    actions = parser.add_subparsers(title="actions", dest="action", metavar="<action>")
    parser.set_defaults(handler=lambda args: _no_action(parser))
    synth = actions.add_parser(
        "synth",
        help="generate the embedded synthetic image-text world",
        description=SYNTH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    synth.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="world directory (image paths in the files are relative to it)",
    )
    synth.add_argument(
        "--seed", type=int, default=0, help="world seed; different seeds give different worlds (default: 0)"
    )
    sizes = "; ".join(f"{name}: {spec.description}" for name, spec in SIZES.items())
    synth.add_argument(
        "--size",
        choices=list(SIZES),
        default="small",
        help=f"how much data to generate (default: small). {sizes}",
    )
    synth.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        metavar="PX",
        help=f"side of the square images in pixels, at least 16 (default: {DEFAULT_IMAGE_SIZE})",
    )
    synth.add_argument(
        "--force", action="store_true", help="regenerate even if --out already holds this world (replaces it)"
    )
    synth.set_defaults(handler=_synth)
    _register_prepare(actions)
    _register_shards(actions)
    _register_list(actions)


SHARDS_DESCRIPTION = """\
Write a JSON list of the loaders (pretraining captions, retrieval training pairs, VQA questions) and its images
as WebDataset tar shards (img2dataset's layout: KEY.jpg with the image file's bytes, KEY.json with the record,
KEY.txt with a string caption), MAXCOUNT samples a shard, plus an index beside each shard. Name the shards in
data.train_files instead of the list, e.g. --set 'data.train_files=["shards/pretrain/{000000..000031}.tar"]':
training then reads the same records and images, with the same exact resume, rank sharding and randomness.
"""


def _register_shards(actions: Any) -> None:
    from albef.cli.task_options import described_parser

    help_text = "write a JSON list and its images as WebDataset tar shards"
    shards = described_parser(actions, "shards", help_text, SHARDS_DESCRIPTION)
    shards.add_argument("input", type=Path, metavar="FILE", help="the JSON list (e.g. data/cc3m_train.json)")
    shards.add_argument(
        "--image-root",
        required=True,
        type=Path,
        metavar="DIR",
        help="root of the list's relative image paths",
    )
    shards.add_argument("--out", required=True, type=Path, metavar="DIR", help="the shard folder (replaced)")
    shards.add_argument("--maxcount", type=int, default=10000, help="samples per shard (default: 10000)")
    shards.set_defaults(handler=_shards)


def _shards(args: argparse.Namespace) -> int:
    _write_shards(args.input, args.image_root, args.out, args.maxcount)
    return 0


def _write_shards(source: Path, image_root: Path, out: Path, maxcount: int) -> None:
    """Shard one JSON list and print how to train on the shards."""
    from albef.data.formats_base import load_json
    from albef.data.shards import write_shards

    records = load_json(source)
    if not isinstance(records, list) or not all(isinstance(r, dict) and "image" in r for r in records):
        raise DataError(source, "expected a JSON list of records, each with an image")
    written = write_shards(records, image_root, out, maxcount=maxcount)
    digits = len(written[-1].stem) if written else 6
    spec = f"{out}/{{{0:0{digits}d}..{len(written) - 1:0{digits}d}}}.tar"
    print(f"{len(records)} samples in {len(written)} shard(s) under {out}")
    print(f"train on them with: --set 'data.train_files=[\"{spec}\"]'")


PREPARE_DESCRIPTION = """\
Check a local copy of a real dataset against its recipe's manifest and convert its official annotations into
the files the loaders read (the official ALBEF formats).

--root is the data root that holds every dataset in its own folder (coco/, flickr30k/, vqa/, visual-genome/,
nlvr2/, snli-ve/, cc3m/, sbu/, cc12m/) and optionally albef_release/ (the extracted ALBEF data.tar.gz); the
expected layout of each dataset is in datasets/<name>/README.md. Each output is made by the first source of
the manifest whose inputs exist: the ALBEF release file when present (it is what the official runs used), else
a conversion of the original annotations (Karpathy dataset_*.json, VQA v2 questions + annotations, lil-lab
NLVR2 JSON lines, COCO captions through pycocotools, ...). Every output is then read back through its reader,
its counts are compared with the manifest (a mismatch with a verified count is an error, with an unverified
one a warning), and every image it names must exist under its image root.

Exit status: 0 when every check passed, 1 when some output is absent or wrong, 2 on malformed input (the
message names the file and the record).
"""


def _register_prepare(actions: Any) -> None:
    from albef.data.prepare import DATASETS

    prepare = actions.add_parser(
        "prepare",
        help="check a local copy of a real dataset and convert its annotations",
        description=PREPARE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("name", metavar="NAME", help=f"dataset recipe: {', '.join(DATASETS.names())}")
    prepare.add_argument(
        "--root", required=True, type=Path, metavar="DIR", help="data root holding the raw files and images"
    )
    prepare.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where the converted files go (default: ROOT/data, where the presets look for them)",
    )
    prepare.add_argument(
        "--check-only",
        action="store_true",
        help="convert nothing: check the raw files, the image folders and the files already in --out",
    )
    prepare.add_argument(
        "--no-images",
        action="store_true",
        help="skip the image checks (folder counts, and that every referenced image exists)",
    )
    prepare.add_argument(
        "--to-shards",
        action="store_true",
        help="also write every training list (pretraining, retrieval, VQA) with its images as WebDataset tar "
        "shards under OUT/shards/<list name>/ (see 'albef data shards --help')",
    )
    prepare.add_argument("--maxcount", type=int, default=10000, help="samples per shard (default: 10000)")
    prepare.set_defaults(handler=_prepare)


def _register_list(actions: Any) -> None:
    listing = actions.add_parser(
        "list",
        help="list the real-dataset recipes and the files they make",
        description="List the dataset recipes that 'albef data prepare' accepts, with the files each makes "
        "(READMEs in datasets/<name>/, manifests in albef/resources/datasets/<name>.json).",
    )
    listing.set_defaults(handler=_list)


def _prepare(args: argparse.Namespace) -> int:
    from albef.cli.main import AlbefError
    from albef.data.prepare import DATASETS, prepare

    manifest = DATASETS.get(args.name).manifest()
    if not args.root.is_dir():
        raise AlbefError(f"--root {args.root} is not a folder")
    out = args.out if args.out is not None else args.root / "data"
    report = prepare(manifest, args.root, out, convert=not args.check_only, images=not args.no_images)
    print_prepare_report(report)
    if args.to_shards and report.ok:
        for spec in manifest.outputs:
            if spec.format in SHARDED_FORMATS and spec.image_root is not None and (out / spec.file).is_file():
                print(f"\n{spec.file}:")
                _write_shards(
                    out / spec.file,
                    args.root / spec.image_root,
                    out / "shards" / Path(spec.file).stem,
                    args.maxcount,
                )
    return 0 if report.ok else 1


SHARDED_FORMATS = ("pretrain", "retrieval_train", "vqa_train")
"""The training lists ``--to-shards`` writes as shards."""


def print_prepare_report(report: Any) -> None:
    """Print a :class:`~albef.data.prepare.PrepareReport`: one row per output, then the findings."""
    from tabulate import tabulate

    print(f"{report.name}: root {report.root}, out {report.out}")
    rows = []
    for result in report.outputs:
        status = ("written" if result.source else "present") if result.present else "absent"
        counts = " ".join(f"{key}={value}" for key, value in result.counts.items())
        if result.missing_images:
            counts += f" missing_images={len(result.missing_images)}"
        rows.append((result.file, status, counts, result.source or ""))
    print()
    print(tabulate(rows, headers=["file", "status", "counts", "made from"], tablefmt="simple"))
    if report.findings:
        print()
    for finding in report.findings:
        print(f"{finding.level}: {finding.message}")
    errors = sum(f.level == "error" for f in report.findings)
    print()
    print("all checks passed" if errors == 0 else f"{errors} check(s) failed")


def _list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from albef.data.prepare import DATASETS

    rows = []
    for name in DATASETS.names():
        manifest = DATASETS.get(name).manifest()
        rows.append((name, ", ".join(o.file for o in manifest.outputs), manifest.title))
    print(tabulate(rows, headers=["name", "makes", "description"], tablefmt="simple"))
    return 0


def _no_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


class ProgressBars:
    """Adapts the library's ``progress(stage, done, total)`` callback to one tqdm bar per stage on stderr."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            unit = "img" if stage.startswith("rendering") else "step"
            self._bar = tqdm(
                total=total, desc=stage, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True
            )
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _synth(args: argparse.Namespace) -> int:
    from albef.data.synthetic import ensure_world, world_matches

    reused = not args.force and world_matches(args.out, args.size, args.seed, args.image_size)
    bars = ProgressBars()
    try:  # a folder holding something else is a SyntheticWorldError: one line, exit 2
        root = ensure_world(args.out, args.size, args.seed, args.image_size, force=args.force, progress=bars)
    finally:
        bars.close()
    print_world_summary(root, reused)
    return 0


def _chance_rows(chance: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for split in ("retrieval_val", "retrieval_test"):
        for metric, value in chance[split].items():
            rows.append((split, metric.replace("_r", " R@"), f"{100 * value:.2f}"))
    vqa = chance["vqa_test"]
    rows.append(("vqa_test", f"accuracy, always '{vqa['majority_answer']}'", f"{100 * vqa['overall']:.2f}"))
    for answer_type in ("yes/no", "number", "other"):
        prior = vqa[answer_type]
        rows.append(
            (
                "vqa_test",
                f"{answer_type}, always '{prior['majority_answer']}'",
                f"{100 * prior['accuracy']:.2f}",
            )
        )
    for split in ("nlvr_dev", "nlvr_test"):
        rows.append(
            (split, f"accuracy, always '{chance[split]['label']}'", f"{100 * chance[split]['rate']:.2f}")
        )
        rows.append((split, "consistency, random guess", f"{100 * chance[split]['random_consistency']:.2f}"))
    for split in ("ve_dev", "ve_test"):
        rows.append(
            (split, f"accuracy, always '{chance[split]['label']}'", f"{100 * chance[split]['rate']:.2f}")
        )
    rows.append(("ve", "hypothesis-only ceiling", f"{100 * chance['ve_hypothesis_only_ceiling']:.2f}"))
    rows.append(("text assignment", "accuracy, random", f"{100 * chance['text_assignment']:.2f}"))
    return rows


def print_world_summary(root: Path, reused: bool) -> None:
    from tabulate import tabulate

    from albef.data.synthetic.writers import read_manifest

    manifest = read_manifest(root)
    assert manifest is not None, "ensure_world returned without a manifest"
    state = "reused existing world" if reused else "generated"
    print(
        f"{state}: {root} (size {manifest['size']}, seed {manifest['seed']}, {manifest['image_size']} px, "
        f"{manifest['generator']} v{manifest['world_version']})"
    )
    files = [(path, entry["records"], entry["bytes"]) for path, entry in manifest["files"].items()]
    files.append(("images (see SHA256SUMS)", manifest["images"]["count"], ""))
    print()
    print(tabulate(files, headers=["file", "records", "bytes"], tablefmt="simple"))
    print()
    print(
        tabulate(_chance_rows(manifest["chance"]), headers=["split", "chance level", "%"], tablefmt="simple")
    )
