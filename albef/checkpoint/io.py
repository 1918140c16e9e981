"""Reading state dicts from every official file form, and atomic saving.

Official ALBEF files are either ``{'model': state_dict, 'optimizer': ..., 'config': ..., 'epoch': ...}``
(what every training script saves) or a bare state dict (the released ``refcoco.pth``). Pickled files are
read only through ``torch.load(weights_only=True)``: a file that needs code to unpickle is refused with
:class:`UnsafeCheckpointError`, never executed.

safetensors cannot store two names for one tensor. :func:`save_state_dict` therefore writes each tied or
shared tensor (the MLM decoder tied to the word embeddings, NLVR²'s shared cross-attention key/value) as an
independent copy under every name; reading gives equal values, and ``load_state_dict_strict`` checks that they
are equal before loading them into the one tensor of the model. The torch format keeps the sharing.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from albef.errors import CheckpointError
from albef.fileio import atomic_torch_save, atomic_write

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
KEY_ORDER_METADATA = "albef.key_order"
"""safetensors header entry holding the key order (safetensors itself stores keys sorted)."""
WRAPPER_KEYS = ("model", "state_dict")
"""Keys under which a training checkpoint keeps its state dict, tried in this order."""

StateDict = dict[str, Tensor]
PathLike = str | os.PathLike[str]


class CheckpointFormatError(CheckpointError):
    """A file that is not a state dict in a supported format (the message names the file)."""


class CheckpointNotFoundError(CheckpointFormatError, FileNotFoundError):
    """No file at the checkpoint path."""


class UnsafeCheckpointError(CheckpointFormatError):
    """A pickle that needs arbitrary code to load; it was refused, not executed."""


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix != SAFETENSORS_SUFFIX and suffix not in TORCH_SUFFIXES:
        raise CheckpointFormatError(
            f"{path}: unsupported checkpoint suffix '{path.suffix}'; "
            f"use {SAFETENSORS_SUFFIX} or one of {', '.join(TORCH_SUFFIXES)}"
        )
    return suffix


def torch_load_safe(path: PathLike) -> Any:
    """``torch.load`` restricted to tensors and plain containers, onto the CPU; every failure names the file.

    Raises:
        UnsafeCheckpointError: The pickle needs code beyond tensors and containers (nothing was executed).
        CheckpointFormatError: The file is missing, empty, truncated or not a torch file at all.
    """
    _check_torch_magic(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(str(err))
        raise UnsafeCheckpointError(
            f"{path}: refusing to unpickle: the file needs code beyond tensors and plain containers "
            f"(torch.load(weights_only=True) said: {reason}). Nothing from it was executed. If you trust the "
            "file, re-save its state dict as plain tensors (or .safetensors) in a separate process."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, IndexError) as err:
        raise CheckpointFormatError(
            f"{path}: not a readable checkpoint ({_size(path)}; truncated, corrupt or not a torch file: "
            f"{_first_line(err)})"
        ) from None


def _check_torch_magic(path: PathLike) -> None:
    """A torch file is a zip archive (``PK``) or a legacy pickle stream (protocol opcode ``0x80``)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: no such checkpoint file") from None
    except IsADirectoryError:
        raise CheckpointFormatError(f"{path}: not a readable checkpoint (a directory)") from None
    if not head.startswith((b"PK", b"\x80")):
        raise CheckpointFormatError(
            f"{path}: not a readable checkpoint ({_size(path)}; truncated, corrupt or not a torch file: it is "
            "neither a zip archive nor a pickle)"
        )


def _unpickler_reason(text: str) -> str:
    """The useful line of torch's weights-only refusal (``Unsupported global: GLOBAL posix.system``)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("WeightsUnpickler error:"):
            detail = line.removeprefix("WeightsUnpickler error:").strip()
            return detail or (lines[i + 1] if i + 1 < len(lines) else "refused")
    return lines[0] if lines else "refused"


def _first_line(err: BaseException) -> str:
    """The first line of an error's message (at most 160 characters), or its type when it has none."""
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


def _size(path: PathLike) -> str:
    try:
        size = os.path.getsize(path)
    except OSError:
        return "size unknown"
    return "empty" if size == 0 else f"{size:,} bytes"


def unwrap_state_dict(obj: Any, source: str = "<object>") -> StateDict:
    """The state dict inside a loaded checkpoint object.

    Accepts ``{'model': sd, ...}``, ``{'state_dict': sd, ...}`` or a bare ``sd``; strips a ``module.``
    prefix carried by every key (a state dict saved from a DistributedDataParallel wrapper).

    Raises:
        CheckpointFormatError: No mapping of string keys to tensors could be found (names ``source``).
    """
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        kind = "an empty mapping" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise CheckpointFormatError(
            f"{source}: expected a state dict (or {{'model': state_dict}}), got {kind}"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointFormatError(
            f"{source}: not a state dict: {len(bad)} entries are not str -> Tensor, e.g. {bad[:5]} "
            f"(top-level keys: {list(obj)[:10]})"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_state_dict(path: PathLike) -> StateDict:
    """Read a state dict from ``.safetensors`` or a torch file (``.pth``/``.pt``/``.bin``/``.ckpt``).

    Args:
        path: The file.

    Returns:
        Keys -> CPU tensors, exactly as stored (no renaming besides a ``module.`` prefix).

    Raises:
        CheckpointNotFoundError: No such file (also a ``FileNotFoundError``).
        CheckpointFormatError: Unsupported suffix or content; :class:`UnsafeCheckpointError` for a pickle
            that needs code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if _suffix(path) == SAFETENSORS_SUFFIX:
        try:
            state = _read_safetensors(path)
        except Exception as err:  # safetensors raises its own error type (and OSError) for a broken file
            raise CheckpointFormatError(
                f"{path}: not a readable safetensors file ({_size(path)}; {_first_line(err)})"
            ) from None
        return unwrap_state_dict(state, str(path))
    return unwrap_state_dict(torch_load_safe(path), str(path))


def _read_safetensors(path: Path) -> StateDict:
    """A safetensors file, in the key order recorded by :func:`save_state_dict` when there is one."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    state = load_file(str(path), device="cpu")
    with safe_open(str(path), framework="pt") as handle:
        order = json.loads((handle.metadata() or {}).get(KEY_ORDER_METADATA, "[]"))
    if sorted(order) == sorted(state):
        state = {key: state[key] for key in order}
    return state


def untie(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Contiguous tensors that share no storage: later names of a shared storage get a copy.

    A tensor that is a view into a larger storage is copied too (safetensors stores whole buffers).
    """
    seen: set[int] = set()
    out: StateDict = {}
    for key, value in state_dict.items():
        tensor = value.detach()
        storage = tensor.untyped_storage()
        whole = tensor.is_contiguous() and storage.nbytes() == tensor.numel() * tensor.element_size()
        if storage.data_ptr() in seen or not whole:
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def save_state_dict(
    state_dict: Mapping[str, Tensor], path: PathLike, metadata: Mapping[str, str] | None = None
) -> Path:
    """Save a bare state dict atomically; the format follows the suffix.

    Args:
        state_dict: Keys -> tensors (any layout).
        path: ``*.safetensors`` (tied tensors stored as separate equal copies, see the module docstring)
            or a torch suffix (sharing preserved).
        metadata: String metadata, stored in the safetensors header with the key order (ignored for torch
            files, which keep the order themselves).

    Returns:
        ``path``.
    """
    path = Path(path)
    if _suffix(path) == SAFETENSORS_SUFFIX:
        from safetensors.torch import save_file

        tensors = untie(state_dict)
        header = {**(metadata or {}), KEY_ORDER_METADATA: json.dumps(list(tensors))}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return atomic_torch_save({k: v.detach() for k, v in state_dict.items()}, path)
