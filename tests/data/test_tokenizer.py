"""Tests for albef.data.tokenizer: the official [CLS]-only layout, padding/truncation modes, WordPiece training."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from albef.data.tokenizer import TextTokenizer, TokenBatch, load_tokenizer
from albef.data.wordpiece import train_wordpiece

WORDS = ["a", "cat", "dog", "the", "on", "sit", "##s", "mat", "yes", "no", "two", "play", "##ing", "."]
# ids in the BERT layout below: a=104 cat=105 dog=106 the=107 on=108 sit=109 ##s=110 mat=111 yes=112
# no=113 two=114 play=115 ##ing=116 .=117
CLS, SEP, MASK, PAD = 101, 102, 103, 0


def write_bert_vocab(directory: Path) -> Path:
    """A tiny vocab.txt in bert-base-uncased's layout: [PAD]=0, [unused0..98], [UNK]=100 … [MASK]=103."""
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    return load_tokenizer(write_bert_vocab(tmp_path_factory.mktemp("vocab")))


def test_special_ids_follow_bert_layout(tok: TextTokenizer) -> None:
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    assert tok.vocab_size == 104 + len(WORDS)


def test_single_text_is_cls_then_tokens_without_sep(tok: TextTokenizer) -> None:
    batch = tok.encode(["The cat sits on the MAT."])
    # hand-worked: [CLS] the cat sit ##s on the mat .
    assert batch.input_ids.tolist() == [[CLS, 107, 105, 109, 110, 108, 107, 111, 117]]
    assert batch.attention_mask.tolist() == [[1] * 9]
    assert batch.input_ids.dtype == torch.int64 and batch.attention_mask.dtype == torch.int64
    assert tok.tokenize("Playing") == ["play", "##ing"]
    assert tok.decode(batch.input_ids[0], skip_special_tokens=True) == "the cat sits on the mat."


def test_padding_longest_and_max_length(tok: TextTokenizer) -> None:
    texts = ["the cat sits", "a dog"]
    longest = tok.encode(texts)
    assert longest.input_ids.tolist() == [[CLS, 107, 105, 109, 110], [CLS, 104, 106, PAD, PAD]]
    assert longest.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    fixed = tok.encode(texts, padding="max_length", max_length=8)
    assert fixed.input_ids.shape == (2, 8)
    assert fixed.input_ids[1].tolist() == [CLS, 104, 106, 0, 0, 0, 0, 0]
    assert fixed.attention_mask.sum(1).tolist() == [5, 3]
    assert SEP not in fixed.input_ids


def test_truncation_counts_the_cls(tok: TextTokenizer) -> None:
    text = ["the cat sits on the mat ."]  # 8 word pieces + [CLS]
    assert tok.encode(text).input_ids.shape == (1, 9)  # max_length None: never truncated
    short = tok.encode(text, max_length=5)
    assert short.input_ids.tolist() == [[CLS, 107, 105, 109, 110]]
    fixed = tok.encode([*text, "a"], padding="max_length", max_length=5)
    assert fixed.input_ids.tolist() == [[CLS, 107, 105, 109, 110], [CLS, 104, 0, 0, 0]]


def test_encode_rejects_ambiguous_calls(tok: TextTokenizer) -> None:
    with pytest.raises(ValueError, match="max_length"):
        tok.encode(["a"], padding="max_length")
    with pytest.raises(TypeError):
        tok.encode("a cat")
    with pytest.raises(ValueError):
        tok.encode([])


def test_encode_answers_ends_with_sep(tok: TextTokenizer) -> None:
    batch = tok.encode_answers(["yes", "two dogs"])
    assert batch.input_ids.tolist() == [[CLS, 112, SEP, PAD, PAD], [CLS, 114, 106, 110, SEP]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_layout_survives_pickling(tok: TextTokenizer) -> None:
    # DataLoader workers receive the tokenizer pickled; the [CLS]-only post-processor must travel with it.
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode(["a dog"]).input_ids.tolist() == [[CLS, 104, 106]]


def test_token_batch_to_and_len(tok: TextTokenizer) -> None:
    batch = tok.encode(["a", "a dog"]).to("cpu")
    assert isinstance(batch, TokenBatch) and len(batch) == 2


def test_load_tokenizer_resolves_relative_to_root(tmp_path: Path) -> None:
    write_bert_vocab(tmp_path / "tok")
    assert load_tokenizer("tok", root=tmp_path).cls_token_id == CLS


def test_load_tokenizer_error_names_what_was_tried(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        load_tokenizer("empty", root=tmp_path)
    assert str(tmp_path / "empty") in str(info.value) and "no vocab.txt" in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")


def test_missing_special_token_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        load_tokenizer(tmp_path)


def test_vocabulary_of_special_tokens_only_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="nothing but the special tokens"):
        load_tokenizer(tmp_path)


HUB_SCRIPT = """
import sys
from albef.data.tokenizer import load_tokenizer
print(load_tokenizer("bert-base-uncased").encode(["the cat"]).input_ids.tolist())
try:
    load_tokenizer("no-such-model")
except FileNotFoundError as error:
    print(error)
"""


def test_hub_id_loads_from_the_hub_cache(tmp_path: Path) -> None:
    # A fake hub cache holding bert-base-uncased's vocab.txt; offline, so nothing is downloaded.
    repo = tmp_path / "hub" / "models--bert-base-uncased"
    write_bert_vocab(repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd", encoding="utf-8")
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    ids, error = result.stdout.splitlines()[:2]
    assert ids == f"[[{CLS}, 107, 105]]"
    assert error.startswith("cannot load tokenizer 'no-such-model': directory no-such-model (does not exist)")
    assert "hub cache of 'no-such-model'" in error


CORPUS = [
    "A small red cube is left of the shiny sphere.",
    "Two large blue cylinders are near a rubber cube.",
    "The yellow sphere is above the small green cylinder.",
    "Is there a metal cube right of the red sphere?",
] * 5


def test_train_wordpiece_layout_and_round_trip(tmp_path: Path) -> None:
    out = train_wordpiece(CORPUS, tmp_path / "wp", vocab_size=160)
    lines = (out / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 160
    assert lines[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert lines[-2].startswith("[unused")
    tok = load_tokenizer(out)
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert tok.vocab_size == 160
    batch = tok.encode(["a small red cube is left of the shiny sphere"])
    assert batch.input_ids[0, 0].item() == 2 and tok.unk_token_id not in batch.input_ids
    assert (
        tok.decode(batch.input_ids[0], skip_special_tokens=True)
        == "a small red cube is left of the shiny sphere"
    )
    assert tok.encode_answers(["cube"]).input_ids[0, -1].item() == 3


def test_train_wordpiece_is_deterministic_across_processes(tmp_path: Path) -> None:
    # The tokenizers library's own trainer differs between processes (hash seeds); ours must not.
    script = (
        "import sys; from albef.data.wordpiece import train_wordpiece; "
        f"train_wordpiece({CORPUS!r}, sys.argv[1], vocab_size=100)"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / name)], env={**os.environ, "PYTHONHASHSEED": seed}
        )
        for name, seed in (("a", "1"), ("b", "2"))
    ]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    train_wordpiece(CORPUS, tmp_path / "c", vocab_size=100)
    first = (tmp_path / "a" / "vocab.txt").read_bytes()
    assert first == (tmp_path / "b" / "vocab.txt").read_bytes() == (tmp_path / "c" / "vocab.txt").read_bytes()
    assert len(first.splitlines()) == 100 and b"[unused" not in first  # the budget was filled by learning


def test_train_wordpiece_rejects_too_small_vocab(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="alphabet"):
        train_wordpiece(CORPUS, tmp_path, vocab_size=20)
    with pytest.raises(ValueError, match="empty"):
        train_wordpiece([], tmp_path)
