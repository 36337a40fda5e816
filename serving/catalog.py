"""Which models a request may name, and which texts it may send: checks every process can make.

The model process and each HTTP worker hold the same `Catalog` (the worker gets it in the model
process's first message), so a typo in a model name or an oversized text is answered by the worker
that read it, without a round trip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from serving import errors
from serving.validation import quote

__all__ = ["VISIBLE", "Catalog", "Kind", "is_blank"]

# A visible character: not whitespace, not a control character, not a zero-width or format one
# (soft hyphen, zero-width spaces and joiners, directional marks, word joiners, BOM). The OpenAPI
# document states the same pattern for `text`, so the fuzzer and the pod agree on what is blank.
VISIBLE = r"[^\s\x00-\x1f\x7f-\x9f\xad\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff]"
_VISIBLE = re.compile(VISIBLE)


def is_blank(text: str) -> bool:
    """No `VISIBLE` character: only whitespace, control characters, zero-width spaces and joiners,
    BOMs. A normal text answers at its first character."""
    return _VISIBLE.search(text) is None


Kind = Literal["base", "trained"]


@dataclass(frozen=True, slots=True)
class Catalog:
    """The models served (name -> base or trained, in serving order) and the text limit."""

    kinds: Mapping[str, Kind] = field(default_factory=dict)
    max_text_chars: int = 20_000

    @property
    def names(self) -> list[str]:
        return list(self.kinds)

    @property
    def trained_names(self) -> list[str]:
        return [name for name, kind in self.kinds.items() if kind == "trained"]

    @property
    def base_names(self) -> list[str]:
        return [name for name, kind in self.kinds.items() if kind == "base"]

    def resolve(self, names: Sequence[str] | None, *, trained_only: bool = False) -> list[str]:
        """The models a request names (default: every base model, or every trained one)."""
        trained = self.trained_names
        if trained_only and not trained:
            raise errors.UnknownModel(
                "no trained model is loaded; run `carpool train` to make one "
                "(it writes models/minilm_trained), "
                "then restart `carpool serve`",
                trained_models=[],
            )
        if not names:
            return trained if trained_only else (self.base_names or self.names)
        unknown = [name for name in names if name not in self.kinds]
        if unknown:
            raise errors.UnknownModel(
                f"unknown model {quote(unknown[0])}; this pod serves {', '.join(self.names)}",
                known_models=self.names,
            )
        if trained_only:
            base = [name for name in names if name not in trained]
            if base:
                raise errors.NotATrainedModel(
                    f"{quote(base[0])} is not a trained model; /predict/trained serves {', '.join(trained)} "
                    "(use /predict for base models, or run `carpool train --base NAME` to train one)",
                    trained_models=trained,
                )
        return list(dict.fromkeys(names))

    def check_text(self, text: str) -> None:
        if len(text) > self.max_text_chars:
            raise errors.TextTooLong(
                f"text has {len(text)} characters; "
                f"the limit is {self.max_text_chars} (CARPOOL_MAX_TEXT_CHARS)",
                limit=self.max_text_chars,
            )
        if is_blank(text):
            raise errors.EmptyText(
                "text must not be empty or blank (whitespace, control and zero-width characters only)"
            )
