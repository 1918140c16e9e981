"""``albef data synth``: generate (or reuse) the embedded synthetic image–text world."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

SYNTH_DESCRIPTION = """\
Generate the embedded synthetic image-text world into --out: images of 2-4 coloured shapes on a textured
background, with captions, VQA questions, NLVR2 statements and SNLI-VE hypotheses computed from what the
images show, written in the official ALBEF formats (plus COCO-caption, VQA v2 and lil-lab NLVR2 versions of
the test splits), a WordPiece vocabulary (tokenizer/vocab.txt) and manifest.json (checksums, counts and the
chance level of every task). The same --seed, --size and --image-size give byte-identical files. If --out
already holds the world for these parameters it is reused; otherwise it is generated in a temporary sibling
directory and moved into place, so an interrupted run never leaves a half world behind.
"""


def register(subparsers: Any) -> None:
    """Add the ``data`` command and its actions to the top-level subparsers."""
    from albef.data.synthetic import DEFAULT_IMAGE_SIZE, SIZES

    parser = subparsers.add_parser(
        "data",
        help="data utilities: generate the synthetic world (synth)",
        description="Data utilities. Actions: synth (generate the embedded synthetic world).",
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
    from albef.cli.main import AlbefError
    from albef.data.synthetic import SyntheticWorldError, ensure_world, world_matches

    reused = not args.force and world_matches(args.out, args.size, args.seed, args.image_size)
    bars = ProgressBars()
    try:
        root = ensure_world(args.out, args.size, args.seed, args.image_size, force=args.force, progress=bars)
    except SyntheticWorldError as err:
        raise AlbefError(str(err)) from err
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
