"""The native engine's own forward for Qwen2 / Llama-family decoders, over a preallocated KV cache.

For a tiny model on CPU, transformers' forward costs more in Python (mask creation, cache
objects, output dataclasses, kwarg plumbing) than in arithmetic; this module runs the same
computation from the model's own submodules (embedding, RMSNorms, q/k/v/o projections with
rotary embeddings, gated MLP, lm_head) with one cache tensor per layer allocated up front.
Nothing is copied: every weight is read from the live module at each call, so the decoder
always samples from the trainer's current parameters.

Layout: the prompts are left-padded to one width W, so every row writes its t-th new token's
keys and values into cache column W + t; a per-row key mask hides the padding columns.
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
    """Prefill and one-token decode steps for a Qwen2 / Llama causal LM (see ``fused_unsupported``).

    Cache: keys stored transposed ([..., head_dim, length]) so that a decode step's scores are one
    batched matmul over contiguous [head_dim, t] blocks; the padding mask is kept as an additive
    bias already laid out per (row, key/value head, query head of the group), so the scores,
    scale and mask are one baddbmm.
    """

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

    def _rope_table(self, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
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

    def prefill(self, ids: torch.Tensor, attention: torch.Tensor, repeats: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Run the left-padded prompts ``ids`` [P, W] once, give prompt p ``repeats[p]`` rows of
        cache, and return the next-token logits of each prompt [P, V]."""
        p, w = ids.shape
        rows, length = int(repeats.sum()), w + max_new_tokens
        layers = self.model.model.layers
        dev, hd = ids.device, self.head_dim
        x = self.model.model.embed_tokens(ids)
        self.kt = torch.empty((len(layers), rows, self.kv_heads, hd, length), dtype=x.dtype, device=dev)
        self.v = torch.empty((len(layers), rows, self.kv_heads, length, hd), dtype=x.dtype, device=dev)
        self.cos, self.sin = self._rope_table(length, dev)
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
            k = _linear(h, attn.k_proj).view(p, w, self.kv_heads, hd).transpose(1, 2)
            v = _linear(h, attn.v_proj).view(p, w, self.kv_heads, hd).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            self.kt[i, :, :, :, :w] = k.transpose(-1, -2).repeat_interleave(repeats, dim=0)
            self.v[i, :, :, :w] = v.repeat_interleave(repeats, dim=0)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling, enable_gqa=self.heads != self.kv_heads)
            x = x + _linear(o.transpose(1, 2).reshape(p, w, self.heads * hd), attn.o_proj)
            x = x + self._mlp(layer, x)
        self.t = w
        self.pos = (positions[:, -1] + 1).repeat_interleave(repeats)
        # Columns past the prompt are real for every row once written; slicing to :t+1 hides the rest.
        self.bias = torch.zeros((rows, self.kv_heads, self.group, length), dtype=x.dtype, device=dev)
        self.bias[..., :w].masked_fill_(~real.repeat_interleave(repeats, dim=0)[:, None, None, :], float("-inf"))
        return self._logits(x[:, -1])

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` [B] (one per live row) and return the next-token logits [B, V]."""
        b, t, hd, kvh = tokens.shape[0], self.t, self.head_dim, self.kv_heads
        x = self.model.model.embed_tokens(tokens)
        cos, sin = self.cos[self.pos].unsqueeze(1), self.sin[self.pos].unsqueeze(1)  # [B, 1, D]
        bias = self.bias[..., : t + 1].flatten(0, 1)
        for i, layer in enumerate(self.model.model.layers):
            attn = layer.self_attn
            h = _rms(x, layer.input_layernorm)
            q = _rotate(_linear(h, attn.q_proj).view(b, self.heads, hd), cos, sin)
            self.kt[i, :, :, :, t] = _rotate(_linear(h, attn.k_proj).view(b, kvh, hd), cos, sin)
            self.v[i, :, :, t] = _linear(h, attn.v_proj).view(b, kvh, hd)
            # Query head j uses key/value head j // group: each (row, kv head) is one small matmul.
            scores = torch.baddbmm(bias, q.view(b * kvh, self.group, hd), self.kt[i, ..., : t + 1].flatten(0, 1),
                                   alpha=attn.scaling)
            o = torch.bmm(torch.softmax(scores, dim=-1), self.v[i, :, :, : t + 1].flatten(0, 1))
            x = x + _linear(o.view(b, self.heads * hd), attn.o_proj)
            x = x + self._mlp(layer, x)
        self.t += 1
        self.pos += 1
        return self._logits(x)

    def keep(self, rows: torch.Tensor) -> None:
        """Drop every row of the cache but ``rows`` (indices into the current batch)."""
        self.kt = self.kt.index_select(1, rows)
        self.v = self.v.index_select(1, rows)
        self.pos = self.pos.index_select(0, rows)
        self.bias = self.bias.index_select(0, rows)
