"""Learning a small WordPiece vocabulary for the synthetic world, deterministically.

The vocabulary file is in the standard BERT layout, so :func:`albef.data.tokenizer.load_tokenizer` loads it
exactly as it loads ``bert-base-uncased``: one code path serves both.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

from tokenizers import normalizers, pre_tokenizers

from albef.data.tokenizer import SPECIAL_TOKENS, VOCAB_FILE


def _count_words(texts: Iterable[str]) -> Counter[str]:
    """Count the words of a corpus after BERT's uncased normalisation and pre-tokenisation.

    These are the same ``tokenizers`` components that :class:`TextTokenizer` runs when encoding, so the
    learned pieces are exactly the strings the WordPiece model will later look up.
    """
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    return counts


def _initial_alphabet(words: Iterable[str]) -> list[str]:
    """Every character both as a word start (``c``) and as a continuation (``##c``), sorted.

    Having both forms of every seen character means no word made of seen characters becomes ``[UNK]``.
    """
    chars = sorted({char for word in words for char in word})
    return chars + [f"##{char}" for char in chars]


def _split(word: str) -> list[str]:
    return [word[0]] + [f"##{char}" for char in word[1:]]


def _pairs(symbols: list[str]) -> Counter[tuple[str, str]]:
    return Counter(pairwise(symbols))


def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace each left-to-right occurrence of ``pair`` by one piece (``"ca" + "##t"`` -> ``"cat"``)."""
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1][2:])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def _learn_pieces(counts: Counter[str], budget: int, min_frequency: int) -> list[str]:
    """Learn up to ``budget`` new word pieces by greedy pair merges (WordPiece training as BPE).

    Each step merges the adjacent pair with the highest corpus frequency; ties go to the lexicographically
    smallest pair, which makes the result independent of hash order and thread scheduling.
    """
    words = sorted(counts)
    symbols = [_split(word) for word in words]
    pair_counts: Counter[tuple[str, str]] = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for index, word in enumerate(words):
        for pair, n in _pairs(symbols[index]).items():
            pair_counts[pair] += n * counts[word]
            where[pair].add(index)
    learned: list[str] = []
    seen: set[str] = set()
    while len(learned) < budget and pair_counts:
        best, best_count = min(pair_counts.items(), key=lambda item: (-item[1], item[0]))
        if best_count < min_frequency:
            break
        for index in sorted(where.pop(best)):
            weight = counts[words[index]]
            pair_counts.subtract({pair: n * weight for pair, n in _pairs(symbols[index]).items()})
            symbols[index] = _merge(symbols[index], best)
            for pair, n in _pairs(symbols[index]).items():
                pair_counts[pair] += n * weight
                where[pair].add(index)
        pair_counts = +pair_counts  # drop pairs whose count fell to zero (the merged pair among them)
        piece = best[0] + best[1][2:]
        if piece not in seen:
            seen.add(piece)
            learned.append(piece)
    return learned


def train_wordpiece(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int = 512, *, min_frequency: int = 2
) -> Path:
    """Learn a lower-case BERT WordPiece vocabulary from a corpus and write ``out_dir/vocab.txt``.

    The file has the standard BERT layout and exactly ``vocab_size`` lines: ``[PAD]`` (id 0), ``[UNK]``,
    ``[CLS]``, ``[SEP]``, ``[MASK]`` (ids 1-4), the alphabet (every seen character as ``c`` and ``##c``),
    the learned pieces in the order they were merged, then ``[unused0]``, ``[unused1]``… to fill up.

    Why not ``tokenizers.trainers.WordPieceTrainer``: its tie-breaking depends on per-process hash seeds, so
    the same corpus gives a different vocabulary in each process. The merge loop here is the same algorithm
    (BPE merges over ``##``-prefixed continuations) with ties broken by the pair's text, so the same corpus
    always gives a byte-identical file. Normalisation and pre-tokenisation are the ``tokenizers`` BERT
    components. It counts unique words and updates pair counts incrementally: meant for small corpora
    such as the synthetic world, not for re-learning a 30k vocabulary.

    Args:
        texts: The corpus, one caption or question per item.
        out_dir: Directory to write ``vocab.txt`` into (created if needed); load it with :func:`load_tokenizer`.
        vocab_size: Exact number of lines of the written file.
        min_frequency: A pair is merged only if it occurs at least this often in the corpus.

    Returns:
        ``out_dir``, the directory that :func:`load_tokenizer` accepts.

    Raises:
        ValueError: If the corpus is empty or the special tokens plus the alphabet exceed ``vocab_size``.
    """
    counts = _count_words(texts)
    if not counts:
        raise ValueError("cannot train a WordPiece vocabulary on an empty corpus")
    alphabet = _initial_alphabet(counts)
    base = [*SPECIAL_TOKENS, *alphabet]
    if len(base) > vocab_size:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the corpus needs {len(SPECIAL_TOKENS)} special tokens and an "
            f"alphabet of {len(alphabet)} pieces ({len(alphabet) // 2} characters) = {len(base)} entries"
        )
    learned = [
        piece for piece in _learn_pieces(counts, vocab_size - len(base), min_frequency) if piece not in base
    ]
    tokens = base + learned
    tokens += [f"[unused{i}]" for i in range(vocab_size - len(tokens))]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{VOCAB_FILE}.tmp"
    tmp.write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8", newline="\n")
    os.replace(tmp, out / VOCAB_FILE)  # atomic: a reader never sees a half-written vocabulary
    return out
