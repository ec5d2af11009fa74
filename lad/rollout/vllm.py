"""Rollouts with vLLM on a GPU, colocated with training in the trainer's process.

vLLM is an optional, CUDA-only dependency (``pip install 'lad[gpu]'``) imported only when this
engine is built. Colocation: vLLM gets ``gpu_memory_utilization`` of the card and, with sleep
mode on, releases it between rollouts (weights offloaded, KV cache dropped) so the optimizer
step has the memory; ``update_weights`` wakes the weights alone, loads the trainer's tensors
into them in place, then wakes the KV cache.

The engine runs in-process (V1 multiprocessing off) so the trainer's CUDA tensors reach
``load_weights`` by reference, without serialization.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from lad.chat import prompt_ids
from lad.rollout.base import Completion, SamplingParams


def vllm_available() -> tuple[bool, str]:
    """(usable, why not): vLLM importable and a CUDA device present."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA device (vLLM rollouts need a GPU)"
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        return False, f"vLLM is not installed (pip install 'lad[gpu]'): {err}"
    return True, ""


class VLLMRollout:
    """vLLM ``LLM`` colocated with the trainer.

    model: the policy (its config and tokenizer are saved to a temporary directory that vLLM
        loads; the weights are then pushed by ``update_weights``).
    gpu_memory_utilization: fraction of the GPU vLLM may take (weights + KV cache).
    sleep: release vLLM's memory between rollouts (level 1: weights to CPU, KV cache dropped).
    dtype: vLLM compute dtype ("bfloat16" on GPUs that have it).
    max_model_len: longest prompt + completion; None: the model's maximum.
    seed: engine seed (per-call seeds come from SamplingParams.seed).
    """

    def __init__(self, model, tokenizer, *, gpu_memory_utilization: float = 0.4, sleep: bool = True,
                 dtype: str = "bfloat16", max_model_len: Optional[int] = None, seed: int = 0,
                 enforce_eager: bool = False):
        ok, why = vllm_available()
        if not ok:
            raise RuntimeError(f"vllm rollout unavailable: {why}")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.tokenizer = tokenizer
        self.sleep_between = sleep
        self._tmp = tempfile.TemporaryDirectory(prefix="lad-vllm-")
        src = Path(self._tmp.name)
        # vLLM needs a model directory to build its own module from; weights come from the trainer.
        model.save_pretrained(src)
        tokenizer.save_pretrained(src)
        self.llm = LLM(
            model=str(src), tokenizer=str(src), dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=sleep, max_model_len=max_model_len, enforce_eager=enforce_eager,
            logprobs_mode="processed_logprobs",
        )
        self._asleep = False
        if sleep:
            self._sleep()

    def _sleep(self) -> None:
        if self.sleep_between and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def _wake(self, tags: Optional[list[str]] = None) -> None:
        if self._asleep:
            self.llm.wake_up(tags=tags)
            if tags is None or "kv_cache" in tags:
                self._asleep = False

    def update_weights(self, model) -> None:
        import torch

        if self._asleep:
            # Only the weights first: the KV cache would otherwise take the memory the copy needs.
            self.llm.wake_up(tags=["weights"])
        # Weights go in as they are in the trainer (gathered if ZeRO-3 partitions them); vLLM's
        # load_weights maps Hugging Face names onto its fused modules.
        weights = [(name, p.detach()) for name, p in model.state_dict().items()]
        self.llm.apply_model(lambda m: m.load_weights(weights))
        del weights
        torch.cuda.synchronize()
        self.llm.reset_prefix_cache()
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False

    def generate(self, prompts: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        self._wake()
        ids = prompt_ids(self.tokenizer, prompts)
        sp = VSamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
            stop=params.stop or None, seed=params.seed, ignore_eos=params.ignore_eos, logprobs=0,
            include_stop_str_in_output=True, skip_special_tokens=True,
        )
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in ids], sp, use_tqdm=False)
        result = []
        for p_ids, out in zip(ids, outputs):
            group = []
            for c in out.outputs:
                token_ids = list(c.token_ids)
                logprobs = [step[t].logprob for step, t in zip(c.logprobs, token_ids)]
                group.append(Completion(
                    text=c.text, token_ids=token_ids, logprobs=logprobs,
                    finish_reason="stop" if c.finish_reason == "stop" else "length", prompt_token_ids=p_ids,
                ))
            result.append(group)
        self._sleep()
        return result
