"""Pull the final answer out of a model response."""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
# ```python, ```py, ```python3 or a bare ``` fence, any case.
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) with balanced braces; None if absent.

    Also accepts the brace-less form "\\boxed 5" that some models write.
    """
    found = None
    for match in _BOXED.finditer(text):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                    if depth == 0:
                        found = text[start + 1 : i]
                        break
        else:
            token = re.match(r"[^\s$]+", text[start:])
            if token:
                found = token.group(0)
    return found.strip() if found is not None else None


def _last_match(pattern: str, text: str) -> str | None:
    matches = re.findall(pattern, text)
    if not matches:
        return None
    last = matches[-1]
    return (last if isinstance(last, str) else last[0]).strip()


def extract_answer(text: str, pattern: str | None = None, fallback: str | None = None) -> str | None:
    """The last \\boxed{} content, or with ``pattern`` (a regex with one group) its last match.
    ``fallback`` (a regex with one group, such as "The answer is (.+)") is read only when there is
    no \\boxed{}: for data whose answers are stated, not boxed."""
    if pattern is not None:
        return _last_match(pattern, text)
    boxed = last_boxed(text)
    if boxed is None and fallback is not None:
        return _last_match(fallback, text)
    return boxed


def last_code_block(text: str) -> str | None:
    """The last fenced code block (```python, ```py, ```python3 or bare ```); None when there is none."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else None
