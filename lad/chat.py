"""Chat prompts as a model reads them: the tokenizer's chat template with the generation prompt.

The one place a list of chat messages becomes prompt text and token ids, for the rollout engines,
the trainers (SFT examples, RL prompt lengths) and the evaluators alike, so they all see exactly
the same prompt. It imports nothing of lad, so every layer can reach it from above.
"""

from __future__ import annotations


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """The messages rendered by the tokenizer's chat template, ending where the assistant's turn starts."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_ids(tokenizer, prompts: list[list[dict]]) -> list[list[int]]:
    """Token ids of chat prompts with the generation prompt appended, as every engine and the trainer see them."""
    return [tokenizer(prompt_text(tokenizer, m), add_special_tokens=False)["input_ids"] for m in prompts]
