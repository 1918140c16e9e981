"""Typed configuration dataclasses, presets and strict YAML I/O."""

from albef.config.io import ConfigError, dump_config, from_dict, load_config, save_config, to_dict
from albef.config.presets import list_presets, preset_path
from albef.config.schema import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    TextConfig,
    VisionConfig,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "TextConfig",
    "VisionConfig",
    "dump_config",
    "from_dict",
    "list_presets",
    "load_config",
    "preset_path",
    "save_config",
    "to_dict",
]
