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
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
KEY_ORDER_METADATA = "albef.key_order"
"""safetensors header entry holding the key order (safetensors itself stores keys sorted)."""
WRAPPER_KEYS = ("model", "state_dict")
"""Keys under which a training checkpoint keeps its state dict, tried in this order."""

StateDict = dict[str, Tensor]
PathLike = str | os.PathLike[str]


class CheckpointFormatError(ValueError):
    """A file that is not a state dict in a supported format (the message names the file)."""


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


def _torch_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers, onto the CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpointError(
            f"{path}: refusing to unpickle: the file needs code beyond tensors and plain containers "
            f"(torch.load(weights_only=True) said: {reason}). Nothing from it was executed. If you trust the "
            "file, re-save its state dict as plain tensors (or .safetensors) in a separate process."
        ) from None


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
        FileNotFoundError: No such file.
        CheckpointFormatError: Unsupported suffix or content; :class:`UnsafeCheckpointError` for a pickle
            that needs code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if _suffix(path) == SAFETENSORS_SUFFIX:
        return unwrap_state_dict(_read_safetensors(path), str(path))
    return unwrap_state_dict(_torch_load(path), str(path))


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


def _fsync_dir(directory: Path) -> None:
    """Persist a rename (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Write a file atomically: ``write(tmp)`` into the same directory, fsync, then ``os.replace``.

    A crash leaves either the old file or the new one, never a truncated file. The temporary file is
    removed on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` atomically (for training states as well as state dicts)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()

    return atomic_write(path, write)


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
