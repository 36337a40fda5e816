"""The shipped security-messages dataset, and the loader that validates any dataset."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from carpool_train import dataset

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "data" / "security_messages"
LABELS = ["benign", "phishing", "prompt_injection", "spam"]


@pytest.fixture(scope="module")
def shipped() -> dataset.Splits:
    return dataset.load_splits(SHIPPED)


# --- the shipped dataset ----------------------------------------------------------------------------


def test_has_at_least_600_examples_in_four_balanced_classes(shipped: dataset.Splits) -> None:
    everything = shipped.train + shipped.test
    assert len(everything) >= 600
    assert shipped.labels == LABELS
    counts = Counter(example.label for example in everything)
    assert min(counts.values()) >= 0.15 * len(everything), counts


def test_held_out_split_is_about_a_fifth_of_every_class(shipped: dataset.Splits) -> None:
    train, test = dataset.label_counts(shipped.train), dataset.label_counts(shipped.test)
    for label in LABELS:
        assert 0.17 <= test[label] / (train[label] + test[label]) <= 0.23, (label, train, test)


def test_no_text_is_on_both_sides_or_twice_in_a_split(shipped: dataset.Splits) -> None:
    train = [dataset.normalize(example.text) for example in shipped.train]
    test = [dataset.normalize(example.text) for example in shipped.test]
    assert not set(train) & set(test)
    assert len(set(train)) == len(train)
    assert len(set(test)) == len(test)


def test_every_class_spans_short_lines_to_long_messages(shipped: dataset.Splits) -> None:
    for label in LABELS:
        lengths = sorted(len(e.text) for e in shipped.train + shipped.test if e.label == label)
        assert lengths[0] < 60, label
        assert lengths[-1] > 550, label
        multi_line = [e for e in shipped.train + shipped.test if e.label == label and "\n" in e.text]
        assert len(multi_line) >= 10, label


def test_hard_cases_keep_keywords_from_giving_the_class_away(shipped: dataset.Splits) -> None:
    everything = shipped.train + shipped.test

    def count(label: str, pattern: str) -> int:
        return sum(1 for e in everything if e.label == label and re.search(pattern, e.text, re.IGNORECASE))

    defanged = r"hxxp|\[\.\]"
    assert count("phishing", defanged) >= 20
    assert count("benign", defanged) >= 15  # security teams quote indicators too
    assert count("benign", r"\bignore|disregard|act as|pretend") >= 15  # everyday requests, not injections
    assert count("benign", r"password|verification code|sign-in|signed in") >= 20
    assert count("spam", r"https?://|\.(com|shop|store|co)\b") >= 20  # links are not phishing by themselves
    assert count("phishing", "[\u0400-\u04ff]") >= 5  # Cyrillic look-alike letters
    assert count("prompt_injection", r"<!--|display:none|white|hidden|note to|\[") >= 40  # hidden in content


def test_every_record_names_its_origin(shipped: dataset.Splits) -> None:
    sources = Counter(e.source.split(":")[0] for e in shipped.train + shipped.test)
    assert set(sources) == {"handwritten", "composed"}
    assert sources["handwritten"] >= 400


def test_build_script_reproduces_the_shipped_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(SHIPPED / "build.py"), str(tmp_path)], check=True, capture_output=True, cwd=REPO
    )
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), name


def test_default_data_is_found_from_the_repository_and_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert dataset.resolve_data_path(None) == REPO / "data" / "security_messages"
    monkeypatch.chdir(tmp_path)  # an editable install still finds the repository's copy
    assert dataset.resolve_data_path(None) == REPO / "data" / "security_messages"


# --- the loader ---------------------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def records(label: str, n: int, start: int = 0) -> list[object]:
    return [{"text": f"{label} message number {i}", "label": label} for i in range(start, start + n)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("{not json", r"bad\.jsonl:2: not valid JSON", id="malformed"),
        pytest.param('["text", "label"]', r"bad\.jsonl:2: expected an object", id="not-an-object"),
        pytest.param(
            '{"label": "spam"}', r"bad\.jsonl:2: 'text' must be a non-empty string, got None", id="no-text"
        ),
        pytest.param(
            '{"text": "  ", "label": "spam"}', r"'text' must be a non-empty string", id="blank-text"
        ),
        pytest.param(
            '{"text": "hi", "label": 3}',
            r"bad\.jsonl:2: 'label' must be a non-empty string, got 3",
            id="label",
        ),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "label": "spam"}\n' + line + "\n")
    with pytest.raises(dataset.DatasetError, match=message):
        dataset.load_jsonl(path)


def test_blank_lines_are_skipped_and_extra_keys_kept_apart(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text('\n{"text": "a", "label": "x", "source": "mine", "lang": "en"}\n\n')
    assert dataset.load_jsonl(path) == [dataset.Example("a", "x", "mine")]


def test_a_missing_dataset_is_named(tmp_path: Path) -> None:
    with pytest.raises(dataset.DatasetError, match=f"dataset not found: {tmp_path / 'nope.jsonl'}"):
        dataset.resolve_data_path(tmp_path / "nope.jsonl")
    with pytest.raises(dataset.DatasetError, match=r"has no test\.jsonl"):
        write_jsonl(tmp_path / "train.jsonl", records("a", 3) + records("b", 3))
        (tmp_path / "sub").mkdir()
        write_jsonl(tmp_path / "sub" / "train.jsonl", records("a", 3))
        dataset.load_splits(tmp_path / "sub")


def test_a_test_file_beside_train_jsonl_is_the_held_out_split(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", records("a", 4) + records("b", 4))
    write_jsonl(tmp_path / "test.jsonl", records("a", 1, start=10) + records("b", 1, start=10))
    splits = dataset.load_splits(train)
    assert (len(splits.train), len(splits.test), splits.test_path) == (8, 2, tmp_path / "test.jsonl")
    assert set(splits.sha256()) == {"train", "test"}


def test_without_a_test_file_the_training_file_is_split_per_label(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "mine.jsonl", records("a", 20) + records("b", 10))
    splits = dataset.load_splits(data, test_fraction=0.2, seed=1)
    assert splits.test_path is None
    assert dataset.label_counts(splits.test) == {"a": 4, "b": 2}
    assert dataset.label_counts(splits.train) == {"a": 16, "b": 8}
    again = dataset.load_splits(data, test_fraction=0.2, seed=1)
    assert again.test == splits.test  # seeded
    other = dataset.load_splits(data, test_fraction=0.2, seed=2)
    assert other.test != splits.test


def test_a_held_out_text_seen_in_training_is_refused(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", records("a", 3) + records("b", 3))
    write_jsonl(tmp_path / "test.jsonl", [{"text": "A message, number 1!", "label": "a"}])
    with pytest.raises(dataset.DatasetError, match=r"1 held-out text.*also occur in the training data"):
        dataset.load_splits(train)


def test_held_out_labels_must_be_known_and_training_needs_two(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", records("a", 3) + records("b", 3))
    write_jsonl(tmp_path / "test.jsonl", records("c", 1))
    with pytest.raises(dataset.DatasetError, match=r"held-out labels \['c'\] never occur"):
        dataset.load_splits(train)
    single = write_jsonl(tmp_path / "single.jsonl", records("a", 10))
    with pytest.raises(dataset.DatasetError, match=r"at least two labels, found \['a'\]"):
        dataset.load_splits(single)


def test_normalize_ignores_case_spacing_and_punctuation_but_not_words() -> None:
    assert dataset.normalize("Click HERE:  now!!") == dataset.normalize("click here now")
    assert dataset.normalize("ｃｌｉｃｋ") == "click"  # full-width letters fold (NFKC)
    assert dataset.normalize("click here") != dataset.normalize("click there")
