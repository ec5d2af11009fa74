"""Token sampling for the native engine: temperature, top-p, seeded, with the sampling log-probs.

A token is drawn by inverting the CDF of its row with one uniform (a cumulative sum and a binary
search: far cheaper on CPU than a [B, V] block of Gumbel or exponential noise); top-p zeroes the
tokens outside the nucleus first, and the draw is scaled by the mass left. The uniforms are
drawn for every row of the batch as it was at the start, whether the row is still decoding or
not, so a row's draws depend only on the seed and its own position in the batch: a row that
stops early (EOS, stop string) changes nothing in the others.

At temperature 0 a token is the argmax of its row (the first of tied maxima, as torch's argmax and
transformers' greedy search take it) and no uniform is drawn; its log-prob is under softmax(logits).
"""

from __future__ import annotations

from typing import Optional

import torch


def nucleus_mask(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """[B, V] bool: the tokens outside the top-p nucleus of each row.

    The nucleus is the smallest set of likeliest tokens whose mass reaches ``top_p`` (a token is
    kept while the mass of the tokens ranked above it is below ``top_p``); the likeliest token is
    always kept.
    """
    sorted_logp, order = logp.sort(dim=-1, descending=True)
    probs = sorted_logp.exp()
    mass_before = probs.cumsum(-1) - probs
    return torch.zeros_like(logp, dtype=torch.bool).scatter_(-1, order, mass_before >= top_p)


class Sampler:
    """Draws one token per row from softmax(logits / temperature), top-p truncated; temperature 0:
    the argmax (greedy decoding).

    rows: the batch size at the start (one uniform is drawn for each of them every step).
    generator: a seeded torch.Generator, or None for the global RNG.
    """

    def __init__(self, rows: int, *, temperature: float, top_p: float, device: torch.device,
                 generator: Optional[torch.Generator]):
        self.temperature = temperature
        self.top_p = top_p
        self.generator = generator
        self._uniform = torch.empty((rows, 1), dtype=torch.float32, device=device)
        self._zero = torch.zeros((), dtype=torch.float32, device=device)

    def __call__(self, logits: torch.Tensor, rows: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [B], their log-probs under softmax(logits / T) [B]) for logits [B, V]; ``rows``
        names the starting-batch row of each (None: all rows, in order)."""
        if self.temperature == 0:
            # argmax of the logits themselves: log_softmax's rounding could tie two that differ
            logits = logits.float()
            tokens = logits.argmax(dim=-1)
            logp = torch.log_softmax(logits, dim=-1)
            return tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        logp = torch.log_softmax(logits.float() / self.temperature, dim=-1)
        probs = logp.exp()
        if self.top_p < 1.0:
            probs.masked_fill_(nucleus_mask(logp, self.top_p), 0.0)
        cdf = probs.cumsum_(-1)
        u = self._uniform.uniform_(generator=self.generator)
        if rows is not None:
            u = u.index_select(0, rows)
        # The draw is u * mass, kept strictly below the total so that rounding can never step past
        # the last token of nonzero probability; a token of zero probability adds a flat segment to
        # the CDF, which searchsorted(right=True) never lands in.
        total = cdf[:, -1:]
        draw = torch.minimum(u * total, torch.nextafter(total, self._zero))
        tokens = torch.searchsorted(cdf, draw, right=True).squeeze(-1)
        return tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
