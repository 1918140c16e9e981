"""The text tokenizer: an uncased WordPiece (BERT) tokenizer that encodes texts the official ALBEF way.

The official code uses a modified ``BertTokenizer`` (spec §4.3): a single text is encoded as
``[CLS] x1 … xn`` with **no trailing [SEP]**. Here the same layout is produced by the fast tokenizer's
post-processor (``TemplateProcessing(single="[CLS] $A")``), so truncation at N tokens keeps N − 1 word
pieces plus the [CLS], exactly as the official tokenizer does, instead of chopping ids afterwards.

The three official call sites (spec §4.3) map onto :meth:`TextTokenizer.encode` as: longest padding with
truncation at N tokens -> ``encode(texts, max_length=N)`` (pretraining, VQA train questions); max_length
padding with truncation -> ``encode(texts, padding="max_length", max_length=N)`` (retrieval evaluation);
longest padding, no truncation -> ``encode(texts)`` (everything else, including retrieval training).

One loading path (:func:`load_tokenizer`) serves both ``bert-base-uncased`` and the small vocabularies
that :func:`albef.data.wordpiece.train_wordpiece` learns for the synthetic world.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import processors

VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"
HUB_PATTERNS = [VOCAB_FILE, TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json"]
"""The files fetched for a hub id: the tokenizer's, not the model weights."""
PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)
"""The special tokens in the order :func:`albef.data.wordpiece.train_wordpiece` writes them (ids 0-4)."""

Padding = Literal["longest", "max_length"]

# A Hugging Face hub id: "name" or "owner/name", no path syntax.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class TokenBatch:
    """A padded batch of token ids.

    Attributes:
        input_ids: (B, L) int64 token ids, ``[CLS]`` first, padded with the pad id.
        attention_mask: (B, L) int64, 1 on real tokens and 0 on padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TokenBatch:
        """Return a copy of the batch on ``device``."""
        return TokenBatch(
            self.input_ids.to(device, non_blocking=non_blocking),
            self.attention_mask.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> TokenBatch:
        """A copy in page-locked memory (the DataLoader's ``pin_memory``)."""
        return TokenBatch(self.input_ids.pin_memory(), self.attention_mask.pin_memory())


class TextTokenizer:
    """An uncased BERT WordPiece tokenizer with the official ``[CLS] text`` (no [SEP]) layout.

    Build it with :func:`load_tokenizer`. The wrapper takes ownership of ``backend``: it replaces the backend's
    post-processor so that a single text gets ``[CLS]`` and no ``[SEP]`` (a pair would get
    ``[CLS] A [SEP] B [SEP]``; ALBEF uses none).

    Args:
        backend: A transformers *fast* BERT tokenizer (``BertTokenizerFast``).

    Raises:
        ValueError: If the vocabulary lacks one of ``[PAD] [UNK] [CLS] [SEP] [MASK]``.
    """

    def __init__(self, backend: Any) -> None:
        # The model's own vocabulary: transformers would silently append a missing special token as a new id.
        vocab = backend.backend_tokenizer.get_vocab(with_added_tokens=False)
        missing = [token for token in SPECIAL_TOKENS if token not in vocab]
        if missing:
            raise ValueError(f"tokenizer vocabulary lacks the special token(s) {missing}")
        if len(vocab) <= len(
            SPECIAL_TOKENS
        ):  # transformers v5 builds such a stub when it finds no vocabulary
            raise ValueError("tokenizer vocabulary holds nothing but the special tokens")
        cls_id, sep_id = vocab[CLS_TOKEN], vocab[SEP_TOKEN]
        backend.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS_TOKEN} $A",
            pair=f"{CLS_TOKEN} $A {SEP_TOKEN} $B:1 {SEP_TOKEN}:1",
            special_tokens=[(CLS_TOKEN, cls_id), (SEP_TOKEN, sep_id)],
        )
        self._backend = backend
        self._ids = {token: int(vocab[token]) for token in SPECIAL_TOKENS}

    @property
    def pad_token_id(self) -> int:
        """Id of ``[PAD]`` (0 for bert-base-uncased)."""
        return self._ids[PAD_TOKEN]

    @property
    def unk_token_id(self) -> int:
        """Id of ``[UNK]`` (100 for bert-base-uncased)."""
        return self._ids[UNK_TOKEN]

    @property
    def cls_token_id(self) -> int:
        """Id of ``[CLS]`` (101 for bert-base-uncased)."""
        return self._ids[CLS_TOKEN]

    @property
    def sep_token_id(self) -> int:
        """Id of ``[SEP]`` (102 for bert-base-uncased)."""
        return self._ids[SEP_TOKEN]

    @property
    def mask_token_id(self) -> int:
        """Id of ``[MASK]`` (103 for bert-base-uncased)."""
        return self._ids[MASK_TOKEN]

    @property
    def vocab_size(self) -> int:
        """Number of token ids (30522 for bert-base-uncased); the text encoder's embedding size."""
        return len(self._backend)

    def encode(
        self, texts: Sequence[str], padding: Padding = "longest", max_length: int | None = None
    ) -> TokenBatch:
        """Tokenize a batch of texts as ``[CLS] tokens``, without a trailing ``[SEP]``.

        Args:
            texts: B texts (already cleaned by ``pre_caption``/``pre_question``).
            padding: ``"longest"`` pads to the longest text in the batch; ``"max_length"`` pads every text to
                ``max_length`` and requires it.
            max_length: Truncate each text to this many tokens, the ``[CLS]`` included. ``None`` never truncates.

        Returns:
            A :class:`TokenBatch` of shape (B, L).

        Raises:
            ValueError: If ``padding="max_length"`` comes without ``max_length``, or ``max_length < 2``.
            TypeError: If ``texts`` is a single string rather than a sequence of strings.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must leave room for [CLS] and one token, got {max_length}")
        if len(texts) == 0:
            raise ValueError("encode() needs at least one text")
        encoded = self._backend(
            list(texts),
            padding=padding,
            truncation=max_length is not None,
            max_length=max_length,
            return_tensors="pt",
            return_attention_mask=True,
            return_token_type_ids=False,
        )
        return TokenBatch(encoded["input_ids"].long(), encoded["attention_mask"].long())

    def encode_answers(self, answers: Sequence[str], eos: str = SEP_TOKEN) -> TokenBatch:
        """Tokenize VQA answers as the answer decoder's targets: ``[CLS] a1 … am [SEP]``, padded to the longest.

        The official code tokenizes ``answer + '[SEP]'``; ``[SEP]`` is a special token, so it is kept whole and
        becomes the decoder's end-of-sequence, while ``[CLS]`` serves as its start. Nothing is truncated.

        Args:
            answers: A answer strings.
            eos: The end-of-sequence token appended to each answer; it must be a special token.

        Returns:
            A :class:`TokenBatch` of shape (A, L).
        """
        if isinstance(answers, str):
            raise TypeError("encode_answers() takes a sequence of answers, not a single string")
        if eos not in self._ids:
            raise ValueError(f"eos must be one of the special tokens {list(self._ids)}, got {eos!r}")
        return self.encode([answer + eos for answer in answers], padding="longest")

    def tokenize(self, text: str) -> list[str]:
        """Split one text into word pieces (no special tokens), e.g. ``"Playing"`` -> ``["play", "##ing"]``."""
        return list(self._backend.tokenize(text))

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Turn ids back into text, joining word pieces.

        Args:
            ids: (L,) token ids.
            skip_special_tokens: Drop ``[CLS]``, ``[SEP]``, ``[PAD]`` and the like.

        Returns:
            The decoded text.
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return str(self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens))


def _local_candidates(name_or_path: str, root: str | Path) -> list[Path]:
    """The directories that ``name_or_path`` may name, in the order they are tried."""
    path = Path(name_or_path).expanduser()
    if path.is_absolute() or not str(root):
        return [path]
    return [Path(root) / path, path]


def _has_vocabulary(directory: Path) -> bool:
    return any((directory / name).is_file() for name in (VOCAB_FILE, TOKENIZER_FILE))


def _hub_snapshot(repo_id: str, tried: list[str]) -> Path | None:
    """The local folder of a hub repository's tokenizer files: the cache first, then a download.

    Failures are appended to ``tried``. ``huggingface_hub`` comes with ``transformers``.
    """
    from huggingface_hub import snapshot_download

    for local_files_only in (True, False):  # the cache first: no network round trip when it is there
        where = "hub cache" if local_files_only else "hub download"
        try:
            folder = snapshot_download(
                repo_id, allow_patterns=HUB_PATTERNS, local_files_only=local_files_only
            )
        except Exception as error:  # the hub client raises many types (HTTP, validation, offline, ...)
            tried.append(f"{where} of {repo_id!r} ({type(error).__name__}: {error})")
            continue
        if _has_vocabulary(Path(folder)):
            return Path(folder)
        tried.append(f"{where} of {repo_id!r} (no vocab.txt or tokenizer.json in {folder})")
    return None


def load_tokenizer(name_or_path: str | Path, root: str | Path = "") -> TextTokenizer:
    """Load an uncased BERT WordPiece tokenizer from a local directory or the Hugging Face hub.

    Resolution order: ``root / name_or_path`` (when relative and ``root`` is given), then ``name_or_path``
    itself; the first directory holding ``vocab.txt`` (or ``tokenizer.json``) wins. If neither path exists
    and the name is a hub id (``bert-base-uncased``), its tokenizer files are taken from the local hub cache,
    or downloaded if they are not cached. Either way the tokenizer is then read from a local directory.
    Nothing is fetched at import time.

    Args:
        name_or_path: A directory with ``vocab.txt`` (e.g. written by :func:`albef.data.wordpiece.train_wordpiece`) or a hub id.
        root: Base directory for a relative ``name_or_path`` (the config's ``data.root``).

    Returns:
        The wrapped tokenizer, lower-casing, with the official ``[CLS] text`` layout.

    Raises:
        FileNotFoundError: If no vocabulary is found; the message lists every place tried.
        ValueError: If the vocabulary lacks a BERT special token.
    """
    name = os.fspath(name_or_path)
    tried: list[str] = []
    directory: Path | None = None
    for candidate in _local_candidates(name, root):
        if _has_vocabulary(candidate):
            directory = candidate
            break
        tried.append(
            f"directory {candidate} ({'has no vocab.txt' if candidate.is_dir() else 'does not exist'})"
        )
    local_path_exists = any(path.exists() for path in _local_candidates(name, root))
    if directory is None and _HUB_ID.match(name) and not local_path_exists:
        directory = _hub_snapshot(name, tried)
    if directory is None:
        raise FileNotFoundError(f"cannot load tokenizer {name!r}: " + "; ".join(tried))
    # Imported here: transformers is heavy. (v5 exports the name through an alias that mypy cannot see.)
    from transformers import BertTokenizerFast  # type: ignore[attr-defined,unused-ignore]

    return TextTokenizer(BertTokenizerFast.from_pretrained(str(directory), do_lower_case=True))
