"""Build train.jsonl and test.jsonl from the hand-written sources and the composer.

    .venv/bin/python data/security_messages/build.py [OUTPUT_DIR]   (default: this directory)

Reads sources/<label>.txt (one hand-written example per line, a literal \\n for a line break, # for
comments) and compose.compose_all(SEED), drops repeats (same text up to case, spacing and
punctuation), then splits 80/20 stratified by label and origin (hand-written or composed family), so
the held-out file has the same mix as the training file. The output is deterministic.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tools"))

import compose  # noqa: E402

from carpool_train import dataset  # noqa: E402

SEED = 20240611
TEST_FRACTION = 0.2
LABELS = ("benign", "phishing", "spam", "prompt_injection")


def handwritten() -> list[dataset.Example]:
    examples = []
    for label in LABELS:
        for line in (HERE / "sources" / f"{label}.txt").read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                text = line.strip().replace("\\n", "\n")
                examples.append(dataset.Example(text=text, label=label, source="handwritten"))
    return examples


def unique(examples: list[dataset.Example]) -> list[dataset.Example]:
    """First occurrence of each normalized text; a text under two labels is a bug in the sources."""
    kept: dict[str, dataset.Example] = {}
    for example in examples:
        key = dataset.normalize(example.text)
        first = kept.setdefault(key, example)
        if first.label != example.label:
            raise SystemExit(f"{example.text!r} is labelled both {first.label} and {example.label}")
    return list(kept.values())


def write(path: Path, examples: list[dataset.Example]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for example in examples:
            record = {"text": example.text, "label": example.label, "source": example.source}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> None:
    output = Path(argv[0]) if argv else HERE
    output.mkdir(parents=True, exist_ok=True)
    composed = [dataset.Example(text, label, source) for text, label, source in compose.compose_all(SEED)]
    examples = unique(handwritten() + composed)
    strata = [f"{example.label}/{example.source}" for example in examples]
    train, test = dataset.stratified_split(examples, TEST_FRACTION, SEED, strata=strata)
    write(output / "train.jsonl", train)
    write(output / "test.jsonl", test)
    for name, split in (("train", train), ("test", test)):
        by_label = Counter(example.label for example in split)
        print(name, len(split), dict(sorted(by_label.items())))


if __name__ == "__main__":
    main(sys.argv[1:])
