"""Labelled text datasets for `carpool train`: JSON Lines files of {"text", "label"} objects.

The repository ships one, `data/security_messages/` (train.jsonl and test.jsonl), which is the default.
Loading validates every line and names the file and line of anything wrong, so a bad dataset fails
before a model is loaded. The held-out split is either a second file or a seeded stratified split of
the training file; either way no text (after `normalize`) may appear on both sides, or the held-out
figures would flatter the model.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_DATA",
    "DatasetError",
    "Example",
    "Splits",
    "label_counts",
    "load_jsonl",
    "load_splits",
    "normalize",
    "resolve_data_path",
    "stratified_split",
]

DEFAULT_DATA = Path("data") / "security_messages"
_REPO_ROOT = Path(__file__).resolve().parents[2]


class DatasetError(ValueError):
    """A dataset that cannot be used: missing, malformed, or overlapping between splits."""


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str
    source: str = ""


@dataclass(frozen=True, slots=True)
class Splits:
    """Training and held-out examples, with where each came from."""

    train: list[Example]
    test: list[Example]
    train_path: Path
    test_path: Path | None  # None when the held-out split was cut from the training file
    labels: list[str]  # sorted, so label ids do not depend on file order

    def sha256(self) -> dict[str, str]:
        digests = {"train": _file_sha256(self.train_path)}
        if self.test_path is not None:
            digests["test"] = _file_sha256(self.test_path)
        return digests


def normalize(text: str) -> str:
    """The key two texts share when they are the same message up to case, spacing and punctuation."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.findall(r"\w+", folded))


def resolve_data_path(given: Path | None) -> Path:
    """The dataset to use: `given`, else the shipped one (from the working directory or the repository)."""
    if given is not None:
        if not given.exists():
            raise DatasetError(f"dataset not found: {given}")
        return given
    candidates = [Path.cwd() / DEFAULT_DATA, _REPO_ROOT / DEFAULT_DATA]
    for candidate in candidates:
        if (candidate / "train.jsonl").is_file():
            return candidate
    tried = ", ".join(str(c / "train.jsonl") for c in dict.fromkeys(candidates))
    raise DatasetError(f"the shipped dataset is missing (looked for {tried}); pass --data FILE")


def load_jsonl(path: Path) -> list[Example]:
    """Read and validate one JSON Lines file; errors name the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc}") from exc
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DatasetError(
                f"{where}: expected an object with 'text' and 'label', got {type(record).__name__}"
            )
        text, label = record.get("text"), record.get("label")
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"{where}: 'text' must be a non-empty string, got {text!r}")
        if not isinstance(label, str) or not label.strip():
            raise DatasetError(f"{where}: 'label' must be a non-empty string, got {label!r}")
        source = record.get("source", "")
        examples.append(Example(text=text, label=label.strip(), source=str(source)))
    if not examples:
        raise DatasetError(f"dataset {path} holds no examples")
    return examples


def load_splits(data: Path, test: Path | None = None, *, test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Training and held-out examples from a dataset directory or file.

    A directory must hold train.jsonl and test.jsonl. A file is the training data; the held-out
    examples come from `test`, else from a test.jsonl beside a train.jsonl, else from a stratified
    split of the file itself.
    """
    if test is not None and not test.is_file():
        raise DatasetError(f"held-out file not found: {test}")
    test_path: Path | None = test
    if data.is_dir():
        train_path = data / "train.jsonl"
        test_path = test_path or data / "test.jsonl"
        for required in (train_path, test_path):
            if not required.is_file():
                raise DatasetError(f"dataset directory {data} has no {required.name}")
    else:
        train_path = data
        sibling = data.with_name("test.jsonl")
        if test_path is None and data.name == "train.jsonl" and sibling.is_file():
            test_path = sibling
    train = load_jsonl(train_path)
    if test_path is None:
        train, held_out = stratified_split(train, test_fraction, seed)
    else:
        held_out = load_jsonl(test_path)
    labels = sorted({example.label for example in train})
    if len(labels) < 2:
        raise DatasetError(f"{train_path}: a classifier needs at least two labels, found {labels}")
    unknown = sorted({example.label for example in held_out} - set(labels))
    if unknown:
        raise DatasetError(f"held-out labels {unknown} never occur in the training data {train_path}")
    _check_disjoint(train, held_out)
    return Splits(train=train, test=held_out, train_path=train_path, test_path=test_path, labels=labels)


def stratified_split(
    examples: Sequence[Example], test_fraction: float, seed: int, *, strata: Iterable[str] | None = None
) -> tuple[list[Example], list[Example]]:
    """Split per stratum (default: the label) so each keeps its share; seeded, order-independent of input."""
    if not 0 < test_fraction < 1:
        raise DatasetError(f"the held-out fraction must be between 0 and 1, got {test_fraction}")
    keys = list(strata) if strata is not None else [example.label for example in examples]
    groups: dict[str, list[Example]] = {}
    for key, example in zip(keys, examples, strict=True):
        groups.setdefault(key, []).append(example)
    rng = random.Random(seed)
    train: list[Example] = []
    test: list[Example] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda example: normalize(example.text))
        rng.shuffle(members)
        cut = round(len(members) * test_fraction)
        test.extend(members[:cut])
        train.extend(members[cut:])
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def label_counts(examples: Iterable[Example]) -> dict[str, int]:
    return dict(sorted(Counter(example.label for example in examples).items()))


def _check_disjoint(train: Sequence[Example], test: Sequence[Example]) -> None:
    seen = {normalize(example.text) for example in train}
    shared = [example.text for example in test if normalize(example.text) in seen]
    if shared:
        raise DatasetError(
            f"{len(shared)} held-out text(s) also occur in the training data, e.g. {shared[0][:80]!r}; "
            "held-out figures would be inflated"
        )


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
