"""Fine-tuning loop: a plain torch loop over a Hugging Face sequence classifier.

Why a hand-written loop rather than the Trainer: it needs nothing beyond torch and transformers (the
Trainer pulls in accelerate), and each choice that matters on a 2-core CPU is visible here:

- Dynamic padding over length-grouped batches: examples are shuffled, cut into pools of a few
  batches, sorted by length inside each pool and then batched, so a batch pads to its own longest
  text rather than to max_length. Batch order is shuffled again, so lengths do not drift per epoch.
- Frozen word embeddings (by default): the 30k x 384 embedding table is half of MiniLM's weights;
  updating it from a thousand sentences buys little accuracy and costs a dense 11M-parameter AdamW
  step per batch (about 0.4 s of a 0.7 s step on 2 cores).
- AdamW with linear warmup and linear decay to zero, no weight decay on biases and LayerNorm
  weights, gradient norm clipped at 1.0.

Runs are reproducible for a given seed, device and thread count: every random source (the head's
initialisation, dropout, batch order) is seeded here.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers import logging as hf_logging

__all__ = [
    "TrainConfig",
    "TrainResult",
    "encode",
    "length_batches",
    "load_base",
    "predict_proba",
    "save_tokenizer",
    "train",
]

POOL_BATCHES = 8  # batches per length-sorted pool: larger pads less, smaller shuffles more


@dataclass(frozen=True, slots=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = 128
    seed: int = 13
    freeze_embeddings: bool = True


@dataclass(slots=True)
class TrainResult:
    seconds: float
    steps: int
    epoch_loss: list[float] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """`auto` means CUDA when present, else CPU; anything else must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}: use auto, cpu, cuda or cuda:N")
    return device


def load_base(
    path: Path, labels: Sequence[str], seed: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base encoder with a fresh classification head for `labels` (seeded), and its tokenizer."""
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    # Its load report lists the new head's weights as missing, which is the point: keep it quiet.
    hf_logging.set_verbosity(logging.ERROR)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,  # a base that already has a head for other labels gets a new one
            dtype=torch.float32,  # train in full precision whatever the checkpoint was saved in
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model, tokenizer


def save_tokenizer(base_path: Path, directory: Path) -> None:
    """Save the base's tokenizer, freshly loaded: one used for training has truncation switched on inside."""
    AutoTokenizer.from_pretrained(str(base_path)).save_pretrained(str(directory))


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated, unpadded (padding happens per batch)."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return [list(ids) for ids in encoded["input_ids"]]


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices whose members have similar lengths."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * POOL_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _collate(ids: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def _optimizer(model: PreTrainedModel, config: TrainConfig) -> torch.optim.AdamW:
    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decay = [p for name, p in trainable if p.ndim >= 2]
    no_decay = [p for name, p in trainable if p.ndim < 2]  # biases and LayerNorm weights
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def train(
    model: PreTrainedModel,
    ids: Sequence[Sequence[int]],
    targets: Sequence[int],
    pad_id: int,
    config: TrainConfig,
    device: torch.device,
    *,
    progress: bool = True,
    description: str = "train",
) -> TrainResult:
    """Fine-tune `model` in place on token ids and label ids; a tqdm bar shows steps and loss."""
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    lengths = [len(row) for row in ids]
    steps_per_epoch = math.ceil(len(ids) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, round(total * config.warmup_ratio))
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    net: torch.nn.Module = model  # torch's typing of .to/.train; transformers 5 wraps them untyped
    net.to(device).train()
    result = TrainResult(seconds=0.0, steps=0)
    started = time.monotonic()
    with tqdm(total=total, desc=description, unit="step", disable=not progress, dynamic_ncols=True) as bar:
        for epoch in range(1, config.epochs + 1):
            losses = []
            for batch in length_batches(lengths, config.batch_size, rng):
                inputs = _collate([ids[i] for i in batch], pad_id, device)
                labels = torch.tensor([targets[i] for i in batch], dtype=torch.long, device=device)
                loss = model(**inputs, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                result.steps += 1
                bar.set_postfix(
                    epoch=f"{epoch}/{config.epochs}", loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}"
                )
                bar.update()
            result.epoch_loss.append(sum(losses) / len(losses))
    result.seconds = time.monotonic() - started
    net.eval()
    return result


def predict_proba(
    model: PreTrainedModel,
    ids: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device,
    batch_size: int = 32,
) -> list[list[float]]:
    """Class probabilities per text, in input order (batched by length, no gradients)."""
    net: torch.nn.Module = model
    net.to(device).eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    probabilities: list[list[float]] = [[] for _ in ids]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            logits = model(**_collate([ids[i] for i in batch], pad_id, device)).logits
            for i, row in zip(batch, logits.float().softmax(dim=-1).cpu().tolist(), strict=True):
                probabilities[i] = row
    return probabilities
