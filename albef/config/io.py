"""Strict (de)serialisation of the config dataclasses.

Precedence, highest first: ``--set section.key=value`` overrides > the YAML file > the file's ``base``
preset (if it names one) > the dataclass defaults. Every unknown key and every value of the wrong type is an
error that names the key, the file and what was expected.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

from albef.config.schema import ExperimentConfig
from albef.errors import ConfigError

T = TypeVar("T")

BASE_KEY = "base"
"""A YAML file may name a preset (or another file) to start from instead of the defaults."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return str(tp).replace("typing.", "")
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form, or raise."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(err)
        raise _type_error(value, tp, where)
    if origin is typing.Literal:
        if value in get_args(tp):
            return value
        raise _type_error(value, tp, where)
    if tp is type(None):
        if value is None:
            return None
        raise _type_error(value, tp, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(value, tp, where)
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _type_error(value, tp, where)
            return tuple(
                _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _type_error(value, tp, where)
        key_type, value_type = get_args(tp) or (Any, Any)
        return {
            _coerce(k, key_type, f"{where} key"): _coerce(v, value_type, f"{where}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(value, tp, where)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(value, tp, where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML reads "1e-4" (no dot) as a string; the official configs are written that way.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(value, tp, where)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(value, tp, where)
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")


def _type_error(value: Any, tp: Any, where: str) -> ConfigError:
    return ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} ({value!r})")


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "<dict>", section: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping, rejecting unknown keys and wrong types.

    Args:
        cls: A config dataclass type.
        data: The mapping, e.g. parsed YAML. Missing keys keep their defaults.
        source: Where ``data`` came from (a file name), quoted in error messages.
        section: Dotted prefix of ``cls`` inside the top-level config, for messages.

    Returns:
        An instance of ``cls``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: section '{section or '<top>'}' must be a mapping, got {type(data).__name__}"
        )
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{section}.{key}" if section else str(key)
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(
                f"{source}: unknown key '{dotted}' in section '{section or '<top>'}'; valid keys: {valid}"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value, source, dotted)  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(value, tp, f"{source}: {dotted}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples become lists, so it dumps as plain YAML)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return typing.cast(dict[str, Any], plain(cfg))


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: values of ``update`` win; nested mappings merge key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def resolve_layers(path: str | Path, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a config file and fold in its ``base`` chain (a preset name or a path relative to the file)."""
    from albef.config.presets import preset_path

    path = Path(path)
    key = str(path.resolve())
    if key in _seen:
        raise ConfigError(f"{path}: circular '{BASE_KEY}' chain: {' -> '.join((*_seen, key))}")
    data = read_yaml(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: '{BASE_KEY}' must be a preset name or a file path, got {base!r}")
    candidate = path.parent / base
    base_path = (
        candidate if candidate.suffix in (".yaml", ".yml") and candidate.exists() else preset_path(base)
    )
    return merge(resolve_layers(base_path, (*_seen, key)), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into the key path and the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a nested dict (validation happens in :func:`from_dict`)."""
    out = dict(data)
    for text in overrides:
        parts, value = parse_override(text)
        nested: dict[str, Any] = {parts[-1]: value}
        for part in reversed(parts[:-1]):
            nested = {part: nested}
        out = merge(out, nested)
    return out


def load_config(name_or_path: str | Path | None = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Load an experiment config by preset name or YAML path, then apply ``--set`` overrides.

    Args:
        name_or_path: A registered preset name (``albef ls configs``) or a path to a YAML file.
            ``None`` gives the defaults.
        overrides: Strings ``section.key=value``; values are parsed as YAML scalars/lists.

    Returns:
        The validated :class:`ExperimentConfig`.
    """
    from albef.config.presets import preset_path

    data: dict[str, Any] = {}
    source = "<defaults>"
    if name_or_path is not None:
        candidate = Path(name_or_path)
        path = candidate if candidate.suffix in (".yaml", ".yml") or candidate.exists() else None
        path = path or preset_path(str(name_or_path))
        data = resolve_layers(path)
        source = str(path)
    overrides = list(overrides)
    if overrides:
        source = f"{source} + --set {' '.join(overrides)}"
        data = apply_overrides(data, overrides)
    cfg = from_dict(ExperimentConfig, data, source)
    check_ranges(cfg, source)
    return cfg


def check_ranges(cfg: ExperimentConfig, source: str = "<config>") -> None:
    """Reject values of the right type but outside their range, naming the key, the value and ``source``.

    Raises:
        ConfigError: The first value out of range.
    """
    text, vision = cfg.model.text, cfg.model.vision
    rules: list[tuple[str, Any, bool, str]] = [
        ("optim.epochs", cfg.optim.epochs, cfg.optim.epochs >= 1, "at least 1"),
        (
            "optim.max_steps",
            cfg.optim.max_steps,
            cfg.optim.max_steps is None or cfg.optim.max_steps >= 1,
            "at least 1 (or null: every epoch)",
        ),
        ("optim.accum_steps", cfg.optim.accum_steps, cfg.optim.accum_steps >= 1, "at least 1"),
        ("data.batch_size_train", cfg.data.batch_size_train, cfg.data.batch_size_train >= 1, "at least 1"),
        ("data.batch_size_test", cfg.data.batch_size_test, cfg.data.batch_size_test >= 1, "at least 1"),
        ("data.num_workers", cfg.data.num_workers, cfg.data.num_workers >= 0, "0 or more"),
        ("eval.k_test", cfg.eval.k_test, cfg.eval.k_test >= 1, "at least 1"),
        ("eval.text_batch_size", cfg.eval.text_batch_size, cfg.eval.text_batch_size >= 1, "at least 1"),
        (
            "runtime.checkpoint_every",
            cfg.runtime.checkpoint_every,
            cfg.runtime.checkpoint_every >= 0,
            "0 (epoch ends only) or more",
        ),
        ("runtime.keep_last", cfg.runtime.keep_last, cfg.runtime.keep_last >= 0, "0 (keep all) or more"),
        ("model.queue_size", cfg.model.queue_size, cfg.model.queue_size >= 1, "at least 1"),
        ("model.momentum", cfg.model.momentum, 0.0 <= cfg.model.momentum <= 1.0, "between 0 and 1"),
        ("model.alpha", cfg.model.alpha, 0.0 <= cfg.model.alpha <= 1.0, "between 0 and 1"),
        (
            "model.mlm_probability",
            cfg.model.mlm_probability,
            0.0 <= cfg.model.mlm_probability <= 1.0,
            "between 0 and 1",
        ),
        ("model.temp", cfg.model.temp, cfg.model.temp > 0, "positive"),
        (
            "model.text.fusion_layer",
            text.fusion_layer,
            0 <= text.fusion_layer <= text.num_layers,
            f"between 0 and model.text.num_layers ({text.num_layers})",
        ),
        (
            "model.text.hidden_size",
            text.hidden_size,
            text.num_heads >= 1 and text.hidden_size % text.num_heads == 0,
            f"a multiple of model.text.num_heads ({text.num_heads})",
        ),
        ("model.vision.patch_size", vision.patch_size, vision.patch_size >= 1, "at least 1"),
        (
            "model.vision.image_res",
            vision.image_res,
            vision.patch_size >= 1
            and vision.image_res >= vision.patch_size
            and vision.image_res % vision.patch_size == 0,
            f"a multiple of model.vision.patch_size ({vision.patch_size})",
        ),
        (
            "model.vision.width",
            vision.width,
            vision.num_heads >= 1 and vision.width % vision.num_heads == 0,
            f"a multiple of model.vision.num_heads ({vision.num_heads})",
        ),
    ]
    for key, value, ok, expected in rules:
        if not ok:
            raise ConfigError(f"{source}: {key} must be {expected}, got {value!r}")


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the full config (every key, defaults included) as YAML."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(cfg), encoding="utf-8")


def dump_config(cfg: ExperimentConfig) -> str:
    """The full config as a YAML string."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
