"""Hugging Face classifiers: our unpadded tokenization and padding against the tokenizer's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from serving import errors
from serving.models import hf
from serving.models.base import Model
from tests.support import tinybert

pytestmark = pytest.mark.unit

TEXTS = ["hi", "Your parcel is held: pay the customs fee at http://example.test/pay today", "a b c d e f"]


@pytest.fixture(scope="module")
def tiny(tiny_bert: Path) -> hf.HFClassifier:
    model = hf.HFClassifier("tiny", tiny_bert, device="cpu", max_length=16)
    model.load()
    return model


def test_is_a_model(tiny: hf.HFClassifier) -> None:
    assert isinstance(tiny, Model)
    assert tiny.labels == tinybert.DEFAULT_LABELS
    assert (tiny.device, tiny.dtype) == ("cpu", "float32")


def test_encode_is_unpadded_and_truncated(tiny: hf.HFClassifier) -> None:
    short, long, _ = (tiny.encode(text) for text in TEXTS)
    assert short.tokens == 3  # [CLS] hi [SEP]
    assert long.tokens == 16  # truncated at max_length
    assert (short.ids[0], short.ids[-1]) == (101, 102)  # [CLS] ... [SEP]


def test_predictions_match_the_plain_transformers_reference(tiny: hf.HFClassifier, tiny_bert: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert)).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**batch).logits.softmax(-1)
    predictions = tiny.predict_batch([tiny.encode(text) for text in TEXTS])
    for prediction, row in zip(predictions, expected, strict=True):
        assert list(prediction.probabilities) == list(tinybert.DEFAULT_LABELS)
        assert list(prediction.probabilities.values()) == pytest.approx(row.tolist(), abs=1e-5)
        assert prediction.label == tinybert.DEFAULT_LABELS[int(row.argmax())]
        assert prediction.score == pytest.approx(float(row.max()), abs=1e-5)


def test_a_text_gets_the_same_answer_alone_or_padded_in_a_batch(tiny: hf.HFClassifier) -> None:
    items = [tiny.encode(text) for text in TEXTS]
    together = tiny.predict_batch(items)
    alone = [tiny.predict_batch([item])[0] for item in items]
    for a, b in zip(together, alone, strict=True):
        assert list(a.probabilities.values()) == pytest.approx(list(b.probabilities.values()), abs=1e-5)


def test_padded_reference_calls_do_not_leak_padding_into_encode(tiny: hf.HFClassifier) -> None:
    before = tiny.encode("hi").ids
    tiny.verify()  # calls the Hugging Face tokenizer with padding=True
    assert tiny.encode("hi").ids == before


def test_warmup_times_several_shapes(tiny: hf.HFClassifier) -> None:
    samples = tiny.warmup()
    assert {(s.batch_size, s.padded_len) for s in samples} >= {(1, 16), (8, 16)}
    assert all(s.seconds > 0 for s in samples)


def test_empty_text_is_refused(tiny: hf.HFClassifier) -> None:
    with pytest.raises(errors.EmptyText):
        tiny.encode(" \n\t")


def test_a_fresh_head_is_the_same_on_every_load(tiny_bert: Path) -> None:
    labels = ("ham", "eggs")
    first, second = (
        hf.HFClassifier("fresh", tiny_bert, device="cpu", head_labels=labels, head_seed=3) for _ in range(2)
    )
    first.load()
    second.load()
    assert first.labels == labels and first.untrained_head
    item = first.encode("same weights every start")
    assert first.predict_batch([item]) == second.predict_batch([item])


@pytest.mark.parametrize(
    ("device", "dtype", "expected"),
    [("cpu", "auto", "float32"), ("cuda", "auto", "float16"), ("cuda:1", "float32", "float32")],
)
def test_resolve_dtype(device: str, dtype: str, expected: str) -> None:
    assert hf.resolve_dtype(dtype, device) == expected


def test_resolve_device_follows_torch() -> None:
    assert hf.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert hf.resolve_device("cpu") == "cpu"


@pytest.mark.parametrize(
    ("one_s", "texts", "most", "threads"),
    [
        pytest.param(0.210, 16, 2, 2, id="minilm-like: 13 ms a text, the model sets the pace"),
        pytest.param(0.830, 16, 2, 2, id="minilm timed on a busy machine: still costly"),
        pytest.param(0.0019, 16, 2, 1, id="tiny-like: 0.1 ms a text, HTTP sets the pace"),
        pytest.param(0.006, 16, 2, 1, id="tiny timed on a busy machine: still cheap"),
        pytest.param(0.016, 16, 8, 8, id="at the bound: every core"),
        pytest.param(0.0, 16, 4, 1, id="no timing"),
    ],
)
def test_every_core_for_a_model_that_sets_the_pace_one_for_a_cheap_one(
    one_s: float, texts: int, most: int, threads: int
) -> None:
    assert hf.threads_for(one_s, texts, most) == threads


def test_warmup_chooses_and_reports_the_threads(tiny: hf.HFClassifier) -> None:
    tiny.warmup()
    assert tiny.torch_threads is not None and tiny.torch_threads >= 1
    if hf.hardware.usable_cpus() > 1:  # a tiny BERT is far too cheap to set the pace: one thread
        assert tiny.torch_threads == 1 and "HTTP sets the pace" in tiny.torch_threads_reason


def test_the_encoder_travels_to_a_worker_and_tokenizes_the_same(tiny: hf.HFClassifier) -> None:
    import pickle

    encoder = tiny.encoder()
    assert encoder is not None
    copy = pickle.loads(pickle.dumps(encoder))
    text = "Your parcel is held: pay the fee at http://parcel.example"
    assert list(copy.encode(text).ids) == list(tiny.encode(text).ids)
    with pytest.raises(errors.EmptyText):
        copy.encode("  ")
