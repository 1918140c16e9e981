"""Loader throughput on real photographs: decode and augment JPEGs as the pretraining and finetuning loaders do.

The photographs that ship inside scikit-learn (``china.jpg``, ``flower.jpg``) and, when installed, scikit-image
(astronaut, coffee, chelsea, rocket, ...) are re-encoded as ``--images`` COCO-like JPEGs of 640x480 (quality 90,
each a different crop / flip of a photo, so no two files are the same), then:

1. **Stages, one process, one thread**: each image goes through the steps of the training transform, each
   timed on its own: read the file, decode (PIL ``open + load + convert("RGB")``, and
   ``torchvision.io.decode_jpeg`` followed by the conversion to the PIL image the transforms take: the same
   work), RandomResizedCrop + flip to 256 px (pretraining, scale 0.2-1) and 384 px (finetuning, scale 0.5-1),
   RandomAugment(2, 7), and ToTensor + Normalize. The shares say what bounds a core.
2. **DataLoader**: the whole pipeline of each preset (PIL decode + transform, what ``albef`` runs) through
   ``albef.data.loaders.build_loader`` with 0, 1 and 2 workers, batch 32, ``--passes`` passes after a warm-up
   pass; images/s, and per core (workers, or the main process without them).

Usage (the committed record; one thread per process)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loader.py --images 96 --passes 2

Writes ``reports/bench/loader.json`` and ``loader.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from albef.data.images import load_image
from albef.data.loaders import build_loader
from albef.data.transforms import (
    FINETUNE_CROP_SCALE,
    PRETRAIN_CROP_SCALE,
    RandomAugment,
    build_train_transform,
)
from albef.fileio import atomic_write_text
from albef.reporting.environment import collect_environment, utc_now_iso

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE = (640, 480)
TIE = 0.05
"""Relative difference below which two decoders count as equally fast."""
PRESETS = {"pretrain_256": (256, PRETRAIN_CROP_SCALE), "finetune_384": (384, FINETUNE_CROP_SCALE)}


def photographs() -> dict[str, np.ndarray]:
    """The real photographs at hand: scikit-learn's two, and scikit-image's colour ones when installed."""
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    photos = {Path(name).stem: image for name, image in zip(sample.filenames, sample.images, strict=True)}
    try:
        from skimage import data

        for name in ("astronaut", "coffee", "chelsea", "rocket"):  # bundled with the package (no download)
            image = getattr(data, name)()
            if image.ndim == 3 and image.shape[2] == 3:
                photos[name] = image
    except ImportError:
        pass
    return photos


def write_jpegs(photos: dict[str, np.ndarray], count: int, folder: Path) -> list[Path]:
    """``count`` distinct 640x480 JPEGs: photo ``i % n``, a sliding 4:3 crop, every other one mirrored."""
    names, paths = sorted(photos), []
    for i in range(count):
        image = Image.fromarray(photos[names[i % len(names)]])
        width, height = image.size
        crop_w = min(width, height * 4 // 3)
        crop_h = crop_w * 3 // 4
        left = (i * 37) % max(1, width - crop_w + 1)
        top = (i * 23) % max(1, height - crop_h + 1)
        image = image.crop((left, top, left + crop_w, top + crop_h)).resize(SIZE, Image.Resampling.BICUBIC)
        if i % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"{i:06d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def decode_pil(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.convert("RGB")


def decode_torchvision(data: bytes) -> Image.Image:
    from torchvision.io import ImageReadMode, decode_jpeg

    tensor = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    return Image.fromarray(tensor.permute(1, 2, 0).numpy())


def _timed(step: Callable[[Any], Any], value: Any, times: list[float]) -> Any:
    tic = time.perf_counter()
    out = step(value)
    times.append(time.perf_counter() - tic)
    return out


def stage_times(paths: list[Path]) -> dict[str, dict[str, float]]:
    """Milliseconds per image of each step (median over the images), one process and thread."""
    import torchvision.transforms as T
    from torchvision.transforms import InterpolationMode

    from albef.data.transforms import CLIP_MEAN, CLIP_STD

    torch.manual_seed(0)
    times: dict[str, list[float]] = {}
    tensor = T.Compose([T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    augment = RandomAugment(2, 7)
    for path in paths:
        data = _timed(Path.read_bytes, path, times.setdefault("read file", []))
        image = _timed(decode_pil, data, times.setdefault("decode: PIL", []))
        _timed(decode_torchvision, data, times.setdefault("decode: torchvision.io.decode_jpeg", []))
        for preset, (res, scale) in PRESETS.items():
            crop = T.Compose(
                [
                    T.RandomResizedCrop(res, scale=scale, interpolation=InterpolationMode.BICUBIC),
                    T.RandomHorizontalFlip(),
                ]
            )
            cropped = _timed(crop, image, times.setdefault(f"{preset}: crop + resize + flip", []))
            augmented = _timed(augment, cropped, times.setdefault(f"{preset}: RandomAugment(2, 7)", []))
            _timed(tensor, augmented, times.setdefault(f"{preset}: to tensor + normalise", []))
    return {
        name: {"median_ms": 1e3 * statistics.median(v), "mean_ms": 1e3 * statistics.fmean(v)}
        for name, v in times.items()
    }


class JpegDataset(torch.utils.data.Dataset[torch.Tensor]):
    """The loaders' path for one image: ``load_image`` (PIL decode, RGB) then the training transform."""

    def __init__(self, paths: list[Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(load_image(self.paths[int(index)]))


def loader_throughput(
    paths: list[Path], workers: int, res: int, scale: tuple[float, float], passes: int
) -> float:
    """Images per second through ``build_loader`` (warm-up pass excluded)."""
    dataset = JpegDataset(paths, build_train_transform(res, scale=scale))
    loader = build_loader(
        dataset, 32, torch.stack, train=True, num_workers=workers, persistent_workers=workers > 0
    )
    for _ in loader:  # warm-up: worker start, first decodes
        pass
    tic, images = time.perf_counter(), 0
    for _ in range(passes):
        for batch in loader:
            images += batch.shape[0]
    return images / (time.perf_counter() - tic)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Loader throughput on real photographs",
        "",
        f"{result['images']} JPEGs of 640x480 (quality 90) made from {', '.join(result['photographs'])}; "
        f"{result['environment']['device_name']}, torch {result['environment']['torch']}, "
        f"git {result['environment']['git']}, one thread per process.",
        "",
        "## Where a core's time goes (ms per image, median; one process)",
        "",
        "| step | ms |",
        "|---|---|",
    ]
    lines += [f"| {name} | {v['median_ms']:.2f} |" for name, v in result["stages"].items()]
    lines += ["", "## DataLoader (PIL decode + the training transform)", ""]
    lines += ["| preset | workers | images/s | images/s per core |", "|---|---|---|---|"]
    for row in result["loader"]:
        lines.append(
            f"| {row['preset']} | {row['workers']} | {row['images_per_s']:.1f} | {row['per_core']:.1f} |"
        )
    lines += ["", result["verdict"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=96, help="JPEGs to make and load (default: 96)")
    parser.add_argument("--passes", type=int, default=2, help="timed passes over them per run (default: 2)")
    parser.add_argument("--workers", default="0,1,2", help="worker counts (default: 0,1,2)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "bench", help="report folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = utc_now_iso()
    photos = photographs()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(photos, args.images, Path(tmp))
        stages = stage_times(paths)
        rows = []
        for preset, (res, scale) in PRESETS.items():
            for workers in (int(w) for w in args.workers.split(",")):
                ips = loader_throughput(paths, workers, res, scale, args.passes)
                rows.append(
                    {
                        "preset": preset,
                        "workers": workers,
                        "images_per_s": ips,
                        "per_core": ips / max(1, workers),
                    }
                )
                print(f"{preset}: {workers} worker(s): {ips:.1f} images/s")
    pil, tv = stages["decode: PIL"]["median_ms"], stages["decode: torchvision.io.decode_jpeg"]["median_ms"]
    # A decoder is switched to only for a clear gain: within TIE of each other, the loaders keep PIL.
    faster = "torchvision.io.decode_jpeg" if tv < (1 - TIE) * pil else "PIL"
    same = abs(pil - tv) <= TIE * max(pil, tv)
    bound = max((k for k in stages if k.startswith("pretrain_256")), key=lambda k: stages[k]["median_ms"])
    verdict = (
        f"Decoding: PIL {pil:.2f} ms, torchvision.io.decode_jpeg (+ conversion to PIL) {tv:.2f} ms per image: "
        + ("no difference beyond 5 %, so the loaders keep PIL" if same else f"{faster} is faster")
        + f". The largest step at 256 px is '{bound.split(': ')[1]}'."
    )
    environment = collect_environment(torch.device("cpu"), "fp32", 0, start, 0.0)
    result = {
        "images": args.images,
        "photographs": sorted(photos),
        "stages": stages,
        "loader": rows,
        "faster_decoder": faster,
        "verdict": verdict,
        "environment": {
            "device_name": environment.device_name,
            "torch": environment.torch,
            "git": environment.git,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "loader.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / "loader.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
