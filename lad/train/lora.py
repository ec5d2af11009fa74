"""Low-rank adapters (LoRA, through peft) for the SFT and RL stages.

With ``lora`` set, a stage wraps its model in peft's LoRA before the engine is built: the base
weights are frozen, only the adapters train (the optimizer holds them alone, checkpoints hold them
and the optimizer without the base), and the stage's output is a normal Hugging Face folder with
the adapters merged in, the adapters themselves saved beside it (``adapter/``, peft's format, to
load over the base with ``PeftModel.from_pretrained``). The RL stage's reference policy for
``kl_coef`` is the same module with its adapters off, so no second copy of the model is kept.
The native rollout engine samples an adapted model through its generic decoder; the vLLM engine,
which loads plain weights, is refused with adapters (RLConfig).

Everything here takes the module as the stage holds it (a ``PeftModel`` when adapted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field

ADAPTER_DIR = "adapter"


class LoraSettings(BaseModel):
    """The adapters (peft's LoraConfig); the base model's weights stay frozen."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, gt=0, description="rank of each adapter")
    alpha: float = Field(32.0, gt=0, description="scale numerator: an adapter adds (alpha / r) * B A to its weight")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on an adapter's input (0: the update is deterministic)")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="names of the linear layers to adapt (q_proj, v_proj, ...); all-linear: every linear "
        "layer but the output head")


def add_adapters(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """``model`` wrapped with fresh adapters (B = 0: it computes what ``model`` did); A is drawn from
    torch's global RNG, so a seeded stage starts from the same adapters."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def is_adapted(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a peft model (its forward runs adapters)."""
    return getattr(model, "peft_config", None) is not None


def save_adapted(model: torch.nn.Module, tokenizer, out_dir: str | Path, card: dict, *, name: str = "model") -> None:
    """``out_dir/<name>``: the merged model in Hugging Face format with its card (``save_model``),
    and ``out_dir/adapter``: the adapters alone. Ends the module's use: the merge is in place."""
    from lad.modeling import save_model

    out_dir = Path(out_dir)
    model.save_pretrained(out_dir / ADAPTER_DIR)
    save_model(model.merge_and_unload(), tokenizer, out_dir / name, card)


def frozen_names(model: torch.nn.Module) -> Optional[set[str]]:
    """Names of the frozen parameters, None when every parameter trains (nothing to leave out of a checkpoint)."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return frozen or None
