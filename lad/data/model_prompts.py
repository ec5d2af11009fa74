"""Prompts as a given model will read them: its tokenizer's own chat template, in its own tokens.

Data prep keeps each row's prompt as chat messages (verl's format); the model's chat template
turns them into text only when a stage samples or trains. With a model named, prep renders every
prompt through that template now (``lad.chat``, exactly as the rollout engines and trainers do),
so a row the template refuses, or one longer than the trainer would accept, is a bad row named
by file and line instead of a surprise in a later stage.
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional

from lad.chat import prompt_ids, prompt_text
from lad.data.adapters import RowError


class ModelPrompts:
    """The chat template and tokenizer of the model reference ``ref``; ``max_tokens`` bounds a rendered prompt."""

    def __init__(self, ref: str, max_tokens: Optional[int] = None):
        from lad.modeling import load_model_tokenizer

        self.ref = ref
        self.max_tokens = max_tokens
        self.tokenizer = load_model_tokenizer(ref)
        if not self.tokenizer.chat_template:
            raise ValueError(f"model {ref!r}: its tokenizer has no chat template; expected one "
                             "(chat_template in tokenizer_config.json, or chat_template.jinja)")

    def tokens(self, messages: list[dict]) -> int:
        """The length in tokens of the rendered prompt; raises RowError (field ``prompt``) when the
        template refuses the messages or the prompt is longer than ``max_tokens``."""
        from jinja2 import TemplateError

        try:
            n = len(prompt_ids(self.tokenizer, [messages])[0])
        except TemplateError as err:  # a template's raise_exception(), e.g. "System role not supported"
            raise RowError("prompt", f"the chat template of {self.ref} refuses these messages: {err}") from None
        if self.max_tokens is not None and n > self.max_tokens:
            raise RowError("prompt", f"{n} tokens with the chat template of {self.ref}, over max_prompt_tokens={self.max_tokens}")
        return n

    def summary(self, first: Optional[list[dict]]) -> dict:
        """What the report records: the model, its template's sha256, and the first prompt as the model reads it."""
        template = self.tokenizer.chat_template
        if not isinstance(template, str):  # several named templates
            template = json.dumps(template, sort_keys=True)
        return {
            "model": self.ref,
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
            "eos_token": self.tokenizer.eos_token,
            "max_prompt_tokens": self.max_tokens,
            "first_prompt": prompt_text(self.tokenizer, first) if first is not None else None,
        }


def length_stats(lengths: list[int]) -> dict:
    """min, mean and max of prompt lengths in tokens (all None for no rows)."""
    if not lengths:
        return {"rows": 0, "min": None, "mean": None, "max": None}
    return {"rows": len(lengths), "min": min(lengths), "mean": round(sum(lengths) / len(lengths), 2), "max": max(lengths)}
