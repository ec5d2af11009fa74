"""Memory of one training process from a model's shape and the memory settings: a formula, stated
in the functions below, used by the README's per-preset table and checked by
``benchmarks/bench_memory.py`` against a measured update.

Per process, the peak of an update is states + max(activations + logits, optimizer step's temporary):

- states, per parameter: weights, gradients, Adam's two moments. Mixed precision (DeepSpeed
  bf16): 2 (bf16 weights) + 2 (bf16 gradients) + 12 (fp32 master weights and moments) = 16
  bytes; float32 (the CPU runs): 4 + 4 + 8 = 16 bytes. ZeRO over D processes divides the 12
  (stage 1), the 12 and the gradients (stage 2) or everything (stage 3) by D; offload moves the
  12 (``offload_optimizer``) and the weights (``offload_params``) to host memory.
- activations kept for backward, per token of a micro-batch and decoder layer, in values of the
  compute dtype: ``10 h + 4 f`` (h hidden size, f MLP width): the two norms' inputs and outputs,
  q and the rotated q, the attention output before and after o_proj's reshape, and gate, up,
  act(gate) and act(gate) * up; GQA's keys and values are counted as part of the 10 h. With
  gradient checkpointing only each layer's input (h) is kept, plus one layer's full set while
  that layer is recomputed in backward.
- logits, per response token: whole, 4 float32 [V] rows (the raw and the temperature-scaled
  logits, the entropy's probabilities and their product with the logits, alive together in the
  forward; backward's gradient and softmax take about as many); chunked
  (``memory.logprob_chunk_size`` c), the same 4 rows for c positions of each sequence only.
- the optimizer step runs after backward has freed activations and logits; torch's AdamW
  (foreach) takes one temporary fp32 value per parameter (of this process's shard).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

ACT_H, ACT_F = 10, 4  # activation values per token and layer: ACT_H * h + ACT_F * f
LOGIT_ROWS = 4  # float32 [V] rows per response token at the peak (see the module docstring)
STEP_TEMP = 4.0  # bytes per parameter of AdamW's foreach temporary


@dataclass(frozen=True)
class ModelShape:
    params: int
    hidden: int
    layers: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, cfg: dict) -> "ModelShape":
        """From a Hugging Face config.json (Llama / Qwen2 family); parameters counted from the shapes."""
        h, f, v, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
        kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * cfg.get("head_dim", h // cfg["num_attention_heads"])
        bias = (h + 2 * kv) if cfg.get("model_type") == "qwen2" else 0  # Qwen2's q/k/v biases
        per_layer = h * h * 2 + h * kv * 2 + bias + 3 * h * f + 2 * h
        head = 0 if cfg.get("tie_word_embeddings", False) else v * h
        return cls(params=v * h + layers * per_layer + h + head, hidden=h, layers=layers, intermediate=f, vocab=v)


def state_bytes(params: int, *, zero_stage: int, world: int, offload_optimizer: bool = False,
                offload_params: bool = False) -> float:
    """bf16 weights and gradients and fp32 optimizer states on one process (see the module docstring)."""
    weights, grads, optim = 2.0, 2.0, 12.0
    if zero_stage >= 1:
        optim /= world
    if zero_stage >= 2:
        grads /= world
    if zero_stage >= 3:
        weights /= world
    if offload_optimizer:
        optim = 0.0
    if offload_params:
        weights = 0.0
    return (weights + grads + optim) * params


def activation_bytes(shape: ModelShape, *, micro_batch: int, seq_len: int, bytes_per_value: int, checkpointing: bool) -> float:
    tokens = micro_batch * seq_len
    layer = (ACT_H * shape.hidden + ACT_F * shape.intermediate) * tokens * bytes_per_value
    if checkpointing:
        return shape.layers * shape.hidden * tokens * bytes_per_value + layer
    return shape.layers * layer


def logit_bytes(shape: ModelShape, *, micro_batch: int, response_len: int, logprob_chunk: Optional[int]) -> float:
    positions = response_len if logprob_chunk is None else min(logprob_chunk, response_len)
    return LOGIT_ROWS * 4.0 * micro_batch * positions * shape.vocab


def update_bytes(shape: ModelShape, *, micro_batch: int, seq_len: int, response_len: int, checkpointing: bool,
                 logprob_chunk: Optional[int]) -> float:
    """What a float32 update adds to a process that holds the weights and Adam's moments (any
    update after the first): gradients (4 bytes per parameter), then the larger of activations +
    logits and the AdamW step's temporary."""
    work = activation_bytes(shape, micro_batch=micro_batch, seq_len=seq_len, bytes_per_value=4, checkpointing=checkpointing) \
        + logit_bytes(shape, micro_batch=micro_batch, response_len=response_len, logprob_chunk=logprob_chunk)
    return 4.0 * shape.params + max(work, STEP_TEMP * shape.params)


def peak_bytes(shape: ModelShape, *, micro_batch: int, seq_len: int, response_len: int, zero_stage: int, world: int,
               checkpointing: bool, logprob_chunk: Optional[int], offload_optimizer: bool = False,
               offload_params: bool = False) -> float:
    """Peak accelerator memory of one bf16 DeepSpeed training process."""
    states = state_bytes(shape.params, zero_stage=zero_stage, world=world, offload_optimizer=offload_optimizer,
                         offload_params=offload_params)
    work = activation_bytes(shape, micro_batch=micro_batch, seq_len=seq_len, bytes_per_value=2, checkpointing=checkpointing) \
        + logit_bytes(shape, micro_batch=micro_batch, response_len=response_len, logprob_chunk=logprob_chunk)
    step = 0.0 if offload_optimizer else STEP_TEMP * shape.params / (world if zero_stage >= 1 else 1)
    return states + max(work, step)


# config.json fields of the models the presets train (configs/train/), by model name.
SHAPES: dict[str, dict] = {
    "Qwen2.5-0.5B-Instruct": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                              "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True, "model_type": "qwen2"},
    "Qwen2.5-1.5B-Instruct": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                              "intermediate_size": 8960, "vocab_size": 151936, "tie_word_embeddings": True, "model_type": "qwen2"},
    "Qwen2.5-7B": {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                   "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": False, "model_type": "qwen2"},
    # Qwen2.5-Math-7B's shape, which the R1 distillation keeps
    "DeepSeek-R1-Distill-Qwen-7B": {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
                                    "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
                                    "tie_word_embeddings": False, "model_type": "qwen2"},
    "smollm2-135m-instruct": {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                              "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True, "model_type": "llama"},
}


def preset_peak_bytes(cfg, processes: int) -> float:
    """Peak memory of one of ``processes`` training processes of an RLConfig ``cfg`` whose model is
    in SHAPES: its longest micro-batch (max_prompt_len + max_new_tokens) under its engine and
    memory settings; bf16 DeepSpeed on GPU (:func:`peak_bytes`, ZeRO-2 when unset), or float32
    on CPU (weights and Adam's moments, 12 bytes per parameter, plus :func:`update_bytes`)."""
    shape = ModelShape.from_config(SHAPES[cfg.model.rstrip("/").rsplit("/", 1)[-1]])
    sizes = {"micro_batch": cfg.train.micro_batch_size, "seq_len": cfg.data.max_prompt_len + cfg.rollout.max_new_tokens,
             "response_len": cfg.rollout.max_new_tokens, "checkpointing": cfg.memory.gradient_checkpointing,
             "logprob_chunk": cfg.memory.logprob_chunk_size}
    if cfg.engine.precision == "fp32":
        return 12.0 * shape.params + update_bytes(shape, **sizes)
    stage = 2 if cfg.engine.zero_stage is None else cfg.engine.zero_stage
    return peak_bytes(shape, zero_stage=stage, world=processes, offload_optimizer=cfg.engine.offload_optimizer,
                      offload_params=cfg.engine.offload_params, **sizes)
