"""A model's tokenizer as a small portable object: text to token ids, without padding.

`TextEncoder` is what `HFClassifier.encode` runs, and what the model process hands to each HTTP
worker once the model is loaded: it pickles as its tokenizer's JSON, so a worker tokenizes
requests exactly as the model process would, on its own core, and the model process receives ids.
It imports the Rust `tokenizers` package only, never torch.
"""

from __future__ import annotations

import os
from typing import Any

from serving import catalog, errors
from serving.models.base import Encoded

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__all__ = ["CHARS_PER_TOKEN", "TextEncoder"]

# A text is cut to max_length x CHARS_PER_TOKEN characters before it is tokenized: a token covers
# at least one character, so the cut only drops text the truncation to max_length tokens would drop
# anyway (unless the kept part is mostly whitespace), and no text costs the tokenizer more than that
# (20,000 characters took 9 ms whole; 2,048 take under 1 ms).
CHARS_PER_TOKEN = 16


class TextEncoder:
    def __init__(self, model: str, tokenizer_json: str, max_length: int) -> None:
        import tokenizers

        self.model = model
        self.max_length = max_length
        self._json = tokenizer_json
        tokenizer = tokenizers.Tokenizer.from_str(tokenizer_json)
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer = tokenizer

    def __reduce__(self) -> tuple[Any, ...]:
        return TextEncoder, (self.model, self._json, self.max_length)

    def encode(self, text: str) -> Encoded:
        """Token ids of `text`, truncated to max_length; 422 for blank text or text it cannot take."""
        if catalog.is_blank(text):
            raise errors.EmptyText("text must not be empty or blank")
        try:
            ids = self._tokenizer.encode(text[: self.max_length * CHARS_PER_TOKEN]).ids
        except Exception as exc:  # the Rust tokenizer raises plain Exception subclasses
            raise errors.InvalidInput(f"model {self.model!r} cannot tokenize the text: {exc}") from exc
        return Encoded(text=text, ids=ids)
