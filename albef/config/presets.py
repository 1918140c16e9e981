"""Experiment presets shipped with the package (``albef/config/presets/*.yaml``).

Each preset is a YAML serialisation of :class:`~albef.config.schema.ExperimentConfig` that lists only what
differs from the defaults (or from the preset it names as ``base``). The official presets reproduce every
value of the official ``configs/*.yaml``; the ``synthetic_*`` presets are sized for a laptop CPU.
"""

from __future__ import annotations

from pathlib import Path

from albef.registry import UnknownNameError

PRESET_DIR = Path(__file__).parent / "presets"


def list_presets() -> list[str]:
    """Names of the shipped experiment presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; an unknown name lists the valid ones."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UnknownNameError(
            f"unknown config '{name}' (neither a preset nor an existing .yaml file); "
            f"valid presets: {', '.join(list_presets())}"
        )
    return path


def describe_preset(name: str) -> str:
    """The first comment line of a preset file, used by ``albef ls configs``."""
    for line in preset_path(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
