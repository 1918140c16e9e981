"""ARO's COCO-Order and Flickr30K-Order: each caption against four word-order perturbations of itself.

The four perturbations (Yuksekgonul et al. 2023, after O'Connor and Andreas 2021):

1. ``shuffle_nouns_and_adj``: the nouns trade places among themselves, and so do the adjectives;
2. ``shuffle_allbut_nouns_and_adj``: every word that is neither a noun nor an adjective trades places;
3. ``shuffle_within_trigrams``: the tokens of each consecutive trigram are shuffled;
4. ``shuffle_trigrams``: the trigrams are shuffled as units.

Nouns are Penn Treebank tags ``NN``, ``NNS``, ``NNP``, ``NNPS`` and adjectives ``JJ``, ``JJR``, ``JJS``, as ARO
reads them from spaCy's ``en_core_web_sm``; :func:`spacy_tagger` loads that model (an optional dependency:
``pip install spacy && python -m spacy download en_core_web_sm``) and any ``text -> [(token, tag)]`` function
can stand in. The trigram shuffles split the caption into words and punctuation (NLTK's ``word_tokenize`` where
installed, else a regular expression that differs from it only on contractions). Every caption draws from its
own generator, seeded by ``seed`` and its position, so a run repeats exactly; ARO draws from one global stream,
so its perturbed captions are other draws of the same four distributions.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Sequence

from albef.data.formats_compositional import ContrastExample
from albef.data.text import pre_caption
from albef.errors import ConfigError

Tagger = Callable[[str], list[tuple[str, str]]]
"""``text -> [(token, Penn Treebank tag), ...]``."""
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
ADJECTIVE_TAGS = frozenset({"JJ", "JJR", "JJS"})
PERTURBATIONS = (
    "shuffle_nouns_and_adj",
    "shuffle_allbut_nouns_and_adj",
    "shuffle_within_trigrams",
    "shuffle_trigrams",
)
_WORDS = re.compile(r"\w+|[^\w\s]")


INSTALL_SPACY = "pip install spacy && python -m spacy download en_core_web_sm"


def spacy_tagger() -> Tagger:
    """The tagger ARO uses (spaCy ``en_core_web_sm``); a ``ConfigError`` says how to install what is missing."""
    try:
        import spacy

        nlp = spacy.load("en_core_web_sm")
    except (ImportError, OSError) as err:
        raise ConfigError(f"the Order sets need spaCy's English tagger ({err}): {INSTALL_SPACY}") from err
    return lambda text: [(token.text, token.tag_) for token in nlp(text)]


@functools.cache
def _nltk_tokenize() -> Callable[[str], list[str]] | None:
    """NLTK's ``word_tokenize`` with its data, or ``None`` (looked up once)."""
    try:
        from nltk import word_tokenize

        word_tokenize("a test.")  # raises LookupError without the punkt data
    except (ImportError, LookupError):
        return None
    return lambda text: list(word_tokenize(text))


def word_tokens(text: str) -> list[str]:
    """Words and punctuation marks (NLTK's ``word_tokenize`` if installed)."""
    tokenize = _nltk_tokenize()
    return tokenize(text) if tokenize is not None else _WORDS.findall(text)


def _shuffle_positions(tokens: list[str], positions: Sequence[int], rng: random.Random) -> list[str]:
    picked = [tokens[i] for i in positions]
    rng.shuffle(picked)
    out = list(tokens)
    for i, token in zip(positions, picked, strict=True):
        out[i] = token
    return out


def trigrams(tokens: Sequence[str]) -> list[list[str]]:
    """Consecutive groups of three tokens (the last may be shorter)."""
    return [list(tokens[i : i + 3]) for i in range(0, len(tokens), 3)]


def perturb(caption: str, kind: str, rng: random.Random, tagger: Tagger | None = None) -> str:
    """One perturbation of ``caption`` (module docstring), joined with single spaces as ARO does."""
    if kind in ("shuffle_nouns_and_adj", "shuffle_allbut_nouns_and_adj"):
        if tagger is None:
            raise ValueError(f"{kind} needs a part-of-speech tagger")
        tagged = tagger(caption)
        tokens = [token for token, _ in tagged]
        nouns = [i for i, (_, tag) in enumerate(tagged) if tag in NOUN_TAGS]
        adjectives = [i for i, (_, tag) in enumerate(tagged) if tag in ADJECTIVE_TAGS]
        if kind == "shuffle_nouns_and_adj":
            tokens = _shuffle_positions(_shuffle_positions(tokens, nouns, rng), adjectives, rng)
        else:
            kept = set(nouns) | set(adjectives)
            tokens = _shuffle_positions(tokens, [i for i in range(len(tokens)) if i not in kept], rng)
        return " ".join(tokens)
    groups = trigrams(word_tokens(caption))
    if kind == "shuffle_within_trigrams":
        for group in groups:
            rng.shuffle(group)
    elif kind == "shuffle_trigrams":
        rng.shuffle(groups)
    else:
        raise ValueError(f"unknown perturbation {kind!r}; valid: {', '.join(PERTURBATIONS)}")
    return " ".join(" ".join(group) for group in groups)


def order_examples(
    images: Sequence[tuple[str, Sequence[str]]],
    tagger: Tagger,
    seed: int = 0,
    max_words: int = 30,
    group: str = "order",
) -> list[ContrastExample]:
    """One example per caption of every image: the caption, then its four perturbations (all ``pre_caption``-ed,
    as ARO does), true first."""
    out = []
    for i, (image, captions) in enumerate(images):
        for j, caption in enumerate(captions):
            rng = random.Random(f"{seed}/{i}/{j}")
            options = [caption, *(perturb(caption, kind, rng, tagger) for kind in PERTURBATIONS)]
            cleaned = tuple(pre_caption(text, max_words) for text in options)
            out.append(ContrastExample(f"{i}/{j}", image, cleaned, group))
    return out
