"""The native engine's own forward for Qwen2 / Llama-family decoders, over a preallocated KV cache
in which the n rows of a prompt share that prompt's keys and values.

For a tiny model on CPU, transformers' forward costs more in Python (mask creation, cache
objects, output dataclasses, kwarg plumbing) than in arithmetic; this module runs the same
computation from the model's own submodules (embedding, RMSNorms, q/k/v/o projections with
rotary embeddings, gated MLP, lm_head). Nothing is copied: every weight is read from the live
module at each call, so the decoder always samples from the trainer's current parameters.

Cache layout, kv-head major so that both halves of a decode step's attention are plain batched
matmuls over views:

    prompt part  keys [L, kv_heads, P, head_dim, W]      values [L, kv_heads, P, W, head_dim]
    new tokens   keys [L, kv_heads, B, head_dim, N]      values [L, kv_heads, B, N, head_dim]

with B = P x n rows (row p * n + j is completion j of prompt p), W the left-padded prompt width
and N = max_new_tokens. The prompt part is written once by the prefill and read once per prompt
per step (the n * group queries of a prompt's rows in one matmul), instead of once per row: the
G completions of a group never copy or re-read their common prompt.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

# Architectures whose decoder layer is exactly: x += o(attn(rope(q(n1(x))), rope(k(..)), v(..)));
# x += down(act(gate(n2(x))) * up(n2(x))); with RMSNorm and full causal attention.
FUSED_MODEL_TYPES = ("qwen2", "llama")
# RoPE variants whose cos/sin depend on the position only (a table computed once is exact).
STATIC_ROPE_TYPES = ("default", "linear", "llama3")


def fused_unsupported(model) -> Optional[str]:
    """Why ``model`` cannot take the fused path (None: it can)."""
    cfg = model.config
    if getattr(model, "peft_config", None) is not None:
        return "LoRA adapters (the fused forward reads the base layers' weights alone)"
    if cfg.model_type not in FUSED_MODEL_TYPES:
        return f"model type {cfg.model_type!r} is not one of {FUSED_MODEL_TYPES}"
    rope = (getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}).get("rope_type", "default")
    if rope not in STATIC_ROPE_TYPES:
        return f"rope type {rope!r} is not one of {STATIC_ROPE_TYPES}"
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
        return "sliding-window attention layers"
    if cfg.model_type == "qwen2" and getattr(cfg, "use_sliding_window", False):
        return "sliding-window attention"
    return None


def _rms(x: torch.Tensor, norm) -> torch.Tensor:
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)


def _linear(x: torch.Tensor, layer) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotary embedding x * cos + rotate_half(x) * sin, with rotate_half(x) * sin computed as the
    halves of x swapped times sin with its first half negated (one flip instead of slices, a neg
    and a cat)."""
    d = x.shape[-1]
    swapped = x.unflatten(-1, (2, d // 2)).flip(-2).flatten(-2)
    return torch.addcmul(x * cos, swapped, sin_signed)


class FusedDecoder:
    """Prefill and one-token decode steps for a Qwen2 / Llama causal LM (see ``fused_unsupported``)."""

    def __init__(self, model):
        why = fused_unsupported(model)
        if why is not None:
            raise ValueError(f"fused decoder: {why}")
        self.model = model
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.group = self.heads // self.kv_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def _rope_tables(self, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sign-flipped sin [length, head_dim] from the model's own rotary module."""
        inner = self.model.model
        positions = torch.arange(length, device=device).unsqueeze(0)
        cos, sin = inner.rotary_emb(inner.embed_tokens.weight[:1], positions)
        half = self.head_dim // 2
        return cos[0], torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)

    def _mlp(self, layer, x: torch.Tensor) -> torch.Tensor:
        mlp = layer.mlp
        h = _rms(x, layer.post_attention_layernorm)
        return _linear(mlp.act_fn(_linear(h, mlp.gate_proj)) * _linear(h, mlp.up_proj), mlp.down_proj)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(_rms(x, self.model.model.norm), self.model.lm_head)

    def prefill(self, ids: torch.Tensor, attention: torch.Tensor, n: int, max_new_tokens: int) -> torch.Tensor:
        """Run the left-padded prompts ``ids`` [P, W] once, make room for n rows of ``max_new_tokens``
        each per prompt, and return the next-token logits of each prompt [P, V]."""
        p, w = ids.shape
        layers = self.model.model.layers
        dev, hd, kvh = ids.device, self.head_dim, self.kv_heads
        x = self.model.model.embed_tokens(ids)
        self.kt_prompt = torch.empty((len(layers), kvh, p, hd, w), dtype=x.dtype, device=dev)
        self.v_prompt = torch.empty((len(layers), kvh, p, w, hd), dtype=x.dtype, device=dev)
        self.kt_new = torch.empty((len(layers), kvh, p * n, hd, max_new_tokens), dtype=x.dtype, device=dev)
        self.v_new = torch.empty((len(layers), kvh, p * n, max_new_tokens, hd), dtype=x.dtype, device=dev)
        self.cos, self.sin = self._rope_tables(w + max_new_tokens, dev)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)  # [P, 1, W, D]
        real = attention.bool()
        # Causal over real keys; a padding query also sees itself, so no softmax row is empty (NaN).
        eye = torch.eye(w, dtype=torch.bool, device=dev)
        mask = (torch.ones(w, w, dtype=torch.bool, device=dev).tril() & (real[:, None, :] | eye)).unsqueeze(1)
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            h = _rms(x, layer.input_layernorm)
            q = _linear(h, attn.q_proj).view(p, w, self.heads, hd).transpose(1, 2)
            k = _linear(h, attn.k_proj).view(p, w, kvh, hd).transpose(1, 2)
            v = _linear(h, attn.v_proj).view(p, w, kvh, hd).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            self.kt_prompt[i] = k.permute(1, 0, 3, 2)
            self.v_prompt[i] = v.transpose(0, 1)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling, enable_gqa=self.heads != kvh)
            x = x + _linear(o.transpose(1, 2).reshape(p, w, self.heads * hd), attn.o_proj)
            x = x + self._mlp(layer, x)
        self.n, self.s = n, 0
        self.pos = (positions[:, -1] + 1).repeat_interleave(n)
        # Padding keys of the prompt part get -inf, as one [kv_heads * P, 1, W] bias broadcast over a prompt's queries.
        bias = torch.zeros((p, w), dtype=x.dtype, device=dev).masked_fill_(~real, float("-inf"))
        self.bias = bias.unsqueeze(0).expand(kvh, p, w).reshape(kvh * p, 1, w)
        # Query scale folded into q's rotary tables: one multiply fewer per layer and step.
        self.scale = layers[0].self_attn.scaling
        return self._logits(x[:, -1])

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` [B] (one per row, B = P x n) and return the next-token logits [B, V]."""
        b, s, hd, kvh, g = tokens.shape[0], self.s, self.head_dim, self.kv_heads, self.group
        p, w = b // self.n, self.bias.shape[-1]
        x = self.model.model.embed_tokens(tokens)
        cos, sin = self.cos[self.pos].unsqueeze(1), self.sin[self.pos].unsqueeze(1)  # [B, 1, D]
        cos_q, sin_q = (cos * self.scale).unsqueeze(1), (sin * self.scale).unsqueeze(1)
        for i, layer in enumerate(self.model.model.layers):
            attn = layer.self_attn
            h = _rms(x, layer.input_layernorm)
            q = _rotate(_linear(h, attn.q_proj).view(b, kvh, g, hd), cos_q, sin_q)
            q = q.transpose(0, 1).contiguous()  # [kv_heads, B, group, D]: query head j uses kv head j // group
            self.kt_new[i, :, :, :, s] = _rotate(_linear(h, attn.k_proj).view(b, kvh, hd), cos, sin).transpose(0, 1)
            self.v_new[i, :, :, s] = _linear(h, attn.v_proj).view(b, kvh, hd).transpose(0, 1)
            # Scores against the prompt (one matmul per prompt and kv head, over its n rows) and
            # against the row's own new tokens; one softmax over both.
            scores = torch.cat((
                torch.baddbmm(self.bias, q.view(kvh * p, self.n * g, hd), self.kt_prompt[i].flatten(0, 1)).view(kvh, b, g, w),
                torch.bmm(q.view(kvh * b, g, hd), self.kt_new[i, ..., : s + 1].flatten(0, 1)).view(kvh, b, g, s + 1),
            ), dim=-1).softmax(dim=-1)
            o = torch.bmm(scores[..., :w].reshape(kvh * p, self.n * g, w), self.v_prompt[i].flatten(0, 1)).view(kvh * b, g, hd)
            o = torch.baddbmm(o, scores[..., w:].reshape(kvh * b, g, s + 1), self.v_new[i, :, :, : s + 1].flatten(0, 1))
            x.add_(_linear(o.view(kvh, b, g * hd).transpose(0, 1).reshape(b, self.heads * hd), attn.o_proj))
            x.add_(self._mlp(layer, x))
        self.s += 1
        self.pos += 1
        return self._logits(x)

    def plan_keep(self, live: list[bool]) -> list[int]:
        """Rows to keep so that every live row stays: the prompts with a live row, each with as many
        rows as the liveliest of them (finished rows fill the gaps, their output is ignored)."""
        rows = [range(j * self.n, (j + 1) * self.n) for j in range(len(live) // self.n)]
        width = max(sum(live[r] for r in group) for group in rows)
        kept = []
        for group in rows:
            alive = [r for r in group if live[r]]
            if alive:
                kept += sorted(alive + [r for r in group if not live[r]][: width - len(alive)])
        return kept

    def keep(self, rows: list[int]) -> None:
        """Keep the rows ``rows`` (a ``plan_keep`` result) and drop the rest."""
        width = sum(1 for r in rows if r // self.n == rows[0] // self.n)
        prompts = torch.tensor(rows[::width], device=self.pos.device) // self.n
        index = torch.tensor(rows, device=self.pos.device)
        self.kt_prompt = self.kt_prompt.index_select(2, prompts)
        self.v_prompt = self.v_prompt.index_select(2, prompts)
        self.kt_new = self.kt_new.index_select(2, index)
        self.v_new = self.v_new.index_select(2, index)
        self.pos = self.pos.index_select(0, index)
        kvh = self.kv_heads
        self.bias = self.bias.view(kvh, -1, 1, self.bias.shape[-1]).index_select(1, prompts).flatten(0, 1)
        self.n = width
