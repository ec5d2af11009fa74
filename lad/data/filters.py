"""Deduplication and decontamination, as pure functions of prompt texts."""

from __future__ import annotations

import unicodedata
from collections import Counter
from typing import Iterable


def normalise(text: str) -> str:
    """Prompt text for duplicate detection: Unicode NFKC, lower case, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def ngrams(text: str, n: int) -> set[str]:
    """The n-grams of whitespace tokens of the lower-cased text, each joined by one space."""
    tokens = text.lower().split()
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


class ContaminationIndex:
    """The eval prompts of a run, to test training prompts against.

    A training prompt is contaminated when it shares an n-gram with an eval prompt, or equals one
    after normalisation (prompts shorter than n tokens have no n-gram). N-grams present in at least
    ``boilerplate`` eval prompts are shared instructions ("The input is given from Standard Input
    in the following format"), not problem content, and do not count.
    """

    def __init__(self, eval_texts: Iterable[str], n: int, boilerplate: int):
        self.n = n
        counts: Counter[str] = Counter()
        self.exact: set[str] = set()
        for text in eval_texts:
            counts.update(ngrams(text, n))
            self.exact.add(normalise(text))
        self.grams = {g for g, c in counts.items() if c < boilerplate}
        self.boilerplate = sorted(g for g, c in counts.items() if c >= boilerplate)

    def contaminated(self, text: str) -> bool:
        if normalise(text) in self.exact:
            return True
        return not self.grams.isdisjoint(ngrams(text, self.n))
