"""From a config's ``data`` section to files, tokenizer, transforms, datasets and loaders.

Relative annotation paths are joined to ``data.root``; image roots too. A synthetic config
(``data.synthetic_size`` set) generates its world under ``data.root`` on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image
from torch import Tensor

from albef.config.schema import DataConfig
from albef.data.tokenizer import TextTokenizer, load_tokenizer
from albef.data.transforms import FINETUNE_CROP_SCALE, build_test_transform, build_train_transform


def ensure_data(cfg: DataConfig) -> None:
    """Generate the synthetic world under ``cfg.root`` if the config names one and it is missing."""
    if cfg.synthetic_size is None:
        return
    from albef.data.synthetic import ensure_world

    ensure_world(cfg.root, cfg.synthetic_size, cfg.synthetic_seed)


def data_path(cfg: DataConfig, path: str) -> Path:
    """An annotation file or image root: absolute paths as given, relative ones under ``cfg.root``."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(cfg.root).expanduser() / candidate


def build_tokenizer(cfg: DataConfig) -> TextTokenizer:
    """The tokenizer named by ``cfg.tokenizer`` (a directory under ``cfg.root``, a path or a hub name)."""
    return load_tokenizer(cfg.tokenizer, root=Path(cfg.root).expanduser())


def train_transform(
    cfg: DataConfig, image_res: int, scale: tuple[float, float] = FINETUNE_CROP_SCALE
) -> Callable[[Image.Image], Tensor]:
    """The official training transform, or the plain test transform when ``cfg.augment`` is off."""
    if not cfg.augment:
        return build_test_transform(image_res)
    return build_train_transform(image_res, scale=scale)
