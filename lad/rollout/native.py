"""Rollouts with the engine's own decode loop, for any Hugging Face decoder-only causal LM;
device-agnostic (tested on CPU).

What makes it fast on a small model, where transformers' ``generate`` spends most of each step
in Python (logits processors, stopping criteria, mask building, cache growth):

- each prompt is prefilled once for its n rows (the G completions of a group share it);
- decode steps run over a KV cache allocated once for prompt + max_new_tokens, through the
  fused forward of ``native_fused`` for Qwen2 / Llama-family models (``native_generic``, the
  model's own forward over a DynamicCache, for the rest);
- sampling is one small block of tensor ops (``native_sampling``), and nothing is synchronised
  with the host per step unless EOS or stop strings have to be checked;
- finished rows leave the batch once that shrinks it by a quarter, so long tails do not cost
  full-batch steps (dropping rows copies the cache, so it is batched; the fused decoder keeps
  the same number of rows for every prompt left, padded with finished ones).

Weights: the engine samples from the module it holds; ``update_weights`` points it at the
trainer's current module and copies nothing, which is correct because every forward reads the
parameters from that module at call time (under ZeRO-3 the trainer hands over the gathered one).
"""

from __future__ import annotations

import sys
from typing import Literal, Optional

import torch

from lad.chat import prompt_ids
from lad.rollout.base import Completion, SamplingParams, left_pad
from lad.rollout.native_fused import FusedDecoder, fused_unsupported
from lad.rollout.native_generic import GenericDecoder
from lad.rollout.native_sampling import Sampler


class NativeRollout:
    """Samples with the native decode loop.

    max_batch_size: sequences decoded together (prompts x n are split into chunks of this many).
    decoder: "fused" (own forward; Qwen2 / Llama family), "generic" (the model's forward), or
        "auto": fused where the architecture allows it, else generic.
    """

    def __init__(self, model, tokenizer, *, max_batch_size: int = 64, decoder: Literal["auto", "fused", "generic"] = "auto"):
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("native rollout needs a tokenizer with eos_token_id and pad_token_id")
        if max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be > 0, got {max_batch_size}")
        if decoder not in ("auto", "fused", "generic"):
            raise ValueError(f"decoder must be 'auto', 'fused' or 'generic', got {decoder!r}")
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.decoder = decoder
        self._announced: Optional[str] = None
        self.update_weights(model)

    def update_weights(self, model) -> None:
        if self.decoder == "fused" and fused_unsupported(model) is not None:
            raise ValueError(f"native rollout, decoder 'fused': {fused_unsupported(model)}")
        self.model = model

    def _make_decoder(self):
        why = "decoder='generic'" if self.decoder == "generic" else fused_unsupported(self.model)
        kind = "fused" if why is None else "generic"
        self._announce(f"native rollout: {kind} decoder for {self.model.config.model_type}" + (f" ({why})" if why else ""))
        return FusedDecoder(self.model) if why is None else GenericDecoder(self.model)

    def _announce(self, line: str) -> None:
        # Which decoder ran decides speed by far; said once per engine, and again only if it changes.
        if line != self._announced:
            print(line, file=sys.stderr, flush=True)
            self._announced = line

    def generate(self, prompts: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        return self.generate_ids(prompt_ids(self.tokenizer, prompts), params)

    @torch.no_grad()
    def generate_ids(self, ids: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """``generate`` for prompts that are already token ids (templated)."""
        device = next(self.model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
        out: list[Completion] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for prompts, n in _chunks(len(ids), params.n, self.max_batch_size):
                out += self._generate_batch([ids[p] for p in prompts], n, params, device, generator)
        finally:
            self.model.train(was_training)
        return [out[i * params.n : (i + 1) * params.n] for i in range(len(ids))]

    def _generate_batch(self, ids: list[list[int]], n: int, params: SamplingParams, device,
                        generator: Optional[torch.Generator]) -> list[Completion]:
        """n completions of each prompt of ``ids``, prompt-major."""
        tok = self.tokenizer
        input_ids, attention = left_pad(ids, tok.pad_token_id)
        decoder = self._make_decoder()
        logits = decoder.prefill(input_ids.to(device), attention.to(device), n, params.max_new_tokens)
        tokens, logprobs, lengths, reasons = self._decode(decoder, logits.repeat_interleave(n, dim=0), params, device, generator)
        rows = [p for p in ids for _ in range(n)]
        return [
            Completion(text=tok.decode(t[:k], skip_special_tokens=True), token_ids=t[:k], logprobs=lp[:k],
                       finish_reason=reason, prompt_token_ids=list(p))
            for p, t, lp, k, reason in zip(rows, tokens.tolist(), logprobs.tolist(), lengths, reasons)
        ]

    def _decode(self, decoder, logits: torch.Tensor, params: SamplingParams, device, generator):
        """The decode loop: (tokens [B, T], log-probs [B, T], lengths, finish reasons)."""
        b, steps = logits.shape[0], params.max_new_tokens
        sampler = Sampler(b, temperature=params.temperature, top_p=params.top_p, device=device, generator=generator)
        tokens = torch.full((b, steps), self.tokenizer.pad_token_id, dtype=torch.long, device=device)
        logprobs = torch.zeros((b, steps), dtype=torch.float32, device=device)
        lengths, reasons = [steps] * b, ["length"] * b
        stopper = _Stopper(self.tokenizer, params, b)
        batch: Optional[torch.Tensor] = None  # starting row of each batch position; None: all, in order
        members = list(range(b))  # the same, as a list
        for t in range(steps):
            new, lp = sampler(logits, batch)
            # A finished row still in the batch writes past its length; those entries are never read.
            if batch is None:
                tokens[:, t], logprobs[:, t] = new, lp
            else:
                tokens[batch, t], logprobs[batch, t] = new, lp
            if stopper.active:
                for row in stopper.finished(members, new.tolist()):
                    lengths[row], reasons[row] = t + 1, "stop"
            if t == steps - 1:
                break
            if stopper.active:
                live = [lengths[row] == steps for row in members]
                if not any(live):
                    break
                kept = decoder.plan_keep(live)
                if len(kept) <= 3 * len(members) // 4:
                    decoder.keep(kept)
                    new = new.index_select(0, torch.tensor(kept, device=device))
                    members = [members[i] for i in kept]
                    batch = torch.tensor(members, device=device)
            logits = decoder.step(new)
        return tokens, logprobs, lengths, reasons


def _chunks(prompts: int, n: int, max_batch_size: int):
    """(prompt indices, rows per prompt) of each decode batch: whole groups of n rows, as many
    prompts as fit in max_batch_size; a group larger than that is split over several batches."""
    if n <= max_batch_size:
        per = max_batch_size // n
        for start in range(0, prompts, per):
            yield list(range(start, min(start + per, prompts))), n
        return
    for p in range(prompts):
        for start in range(0, n, max_batch_size):
            yield [p], min(max_batch_size, n - start)


class _Stopper:
    """Which rows a step finished: EOS (unless ignored) or a stop string completed by the new token."""

    def __init__(self, tokenizer, params: SamplingParams, rows: int):
        self.tokenizer = tokenizer
        self.eos = None if params.ignore_eos else tokenizer.eos_token_id
        self.stops = params.stop
        self.active = self.eos is not None or bool(self.stops)
        self.done = [False] * rows
        self.history: list[list[int]] = [[] for _ in range(rows)]

    def finished(self, members: list[int], new: list[int]) -> list[int]:
        """Starting rows that end at this step, given the token ``new[i]`` of batch position i."""
        ended, texts_for = [], []
        for row, token in zip(members, new):
            if self.done[row]:
                continue
            if token == self.eos:
                ended.append(row)
            elif self.stops:
                self.history[row].append(token)
                texts_for.append(row)
        if texts_for:
            # The whole completion is decoded, as hf's stop check does: a stop string may span
            # tokens, and skipped special tokens join the text around them.
            texts = self.tokenizer.batch_decode([self.history[r] for r in texts_for], skip_special_tokens=True)
            ended += [r for r, text in zip(texts_for, texts) if any(s in text for s in self.stops)]
        for row in ended:
            self.done[row] = True
        return ended
