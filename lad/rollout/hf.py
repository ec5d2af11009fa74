"""Rollouts with transformers ``generate``: left-padded batches, KV cache, seeded, CPU or GPU.

The sampling log-prob of each token is taken inside generation by a logits processor that sees
the raw logits of every step (transformers runs custom processors before its temperature and
top-p warpers) and reads off the token chosen at the previous step, so only one [B, V] row block
is alive at a time, whatever the completion length.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from lad.chat import prompt_ids
from lad.rollout.base import Completion, SamplingParams, left_pad


class _SampledLogprobs:
    """Logits processor that records log softmax(logits / T) of each sampled token; never edits scores."""

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.pending: Optional[torch.Tensor] = None  # [B, V] log-probs of the step whose token is not yet known
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.pending = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """[B, T] log-probs, given the tokens of the last step."""
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, last_tokens.unsqueeze(-1)).squeeze(-1))
            self.pending = None
        return torch.stack(self.steps, dim=1)


class HFRollout:
    """Samples with ``model.generate``.

    max_batch_size: sequences decoded together (prompts x n are split into chunks of this many).
    The engine samples from the very model object it holds: ``update_weights`` just points it at
    the trainer's current module (gathered, under ZeRO-3), nothing is copied.
    """

    def __init__(self, model, tokenizer, *, max_batch_size: int = 64):
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("hf rollout needs a tokenizer with eos_token_id and pad_token_id")
        if max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be > 0, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size

    def update_weights(self, model) -> None:
        self.model = model

    def generate(self, prompts: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        return self.generate_ids(prompt_ids(self.tokenizer, prompts), params)

    @torch.no_grad()
    def generate_ids(self, ids: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """``generate`` for prompts that are already token ids (templated)."""
        flat = [p for p in ids for _ in range(params.n)]
        device = next(self.model.parameters()).device
        out: list[Completion] = []
        was_training = self.model.training
        self.model.eval()
        rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else []) if params.seed is not None else contextlib.nullcontext()
        try:
            with rng:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                for start in range(0, len(flat), self.max_batch_size):
                    out += self._generate_batch(flat[start : start + self.max_batch_size], params, device)
        finally:
            self.model.train(was_training)
        return [out[i * params.n : (i + 1) * params.n] for i in range(len(ids))]

    def _generate_batch(self, batch: list[list[int]], params: SamplingParams, device) -> list[Completion]:
        from transformers import GenerationConfig, LogitsProcessorList

        tok = self.tokenizer
        input_ids, attention = left_pad(batch, tok.pad_token_id)
        # greedy: transformers' own greedy search, and log-probs under softmax(logits) (T = 1)
        recorder = _SampledLogprobs(params.temperature or 1.0)
        sampling = {} if params.greedy else {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        config = GenerationConfig(
            do_sample=not params.greedy, **sampling, max_new_tokens=params.max_new_tokens, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id, stop_strings=params.stop or None, return_dict_in_generate=True,
        )
        with self._eos_disabled(params.ignore_eos, config):
            gen = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config,
                logits_processor=LogitsProcessorList([recorder]), tokenizer=tok if params.stop else None,
            )
        new = gen.sequences[:, input_ids.shape[1]:]
        logprobs = recorder.finish(new[:, -1]).cpu().tolist()
        return [self._completion(p, row, lp, params) for p, row, lp in zip(batch, new.cpu().tolist(), logprobs)]

    @contextlib.contextmanager
    def _eos_disabled(self, ignore_eos: bool, config):
        # generate() fills an unset eos_token_id from the model's generation config, so ignoring EOS
        # means clearing it in both for the duration of the call.
        if not ignore_eos:
            yield
            return
        config.eos_token_id = None
        saved = self.model.generation_config.eos_token_id
        self.model.generation_config.eos_token_id = None
        try:
            yield
        finally:
            self.model.generation_config.eos_token_id = saved

    def _completion(self, prompt: list[int], row: list[int], logprobs: list[float], params: SamplingParams) -> Completion:
        tok = self.tokenizer
        end, reason = len(row), "length"
        if not params.ignore_eos and tok.eos_token_id in row:
            end, reason = row.index(tok.eos_token_id) + 1, "stop"
        if params.stop:
            cut = _stop_cut(tok, row[:end], params.stop)
            if cut is not None:
                end, reason = cut, "stop"
        tokens = row[:end]
        return Completion(
            text=tok.decode(tokens, skip_special_tokens=True), token_ids=tokens, logprobs=logprobs[:end],
            finish_reason=reason, prompt_token_ids=list(prompt),
        )


def _stop_cut(tokenizer, tokens: list[int], stops: list[str]) -> Optional[int]:
    """Length of the shortest prefix of ``tokens`` whose text contains a stop string, or None."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    if not any(s in text for s in stops):
        return None
    lo, hi = 1, len(tokens)  # containment is monotone in the prefix length: binary search
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in tokenizer.decode(tokens[:mid], skip_special_tokens=True) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return lo
