"""The paper's controlled bandit (section 5), reported as numbers instead of a figure.

A 50-armed bandit whose policy is 50 softmax logits, initialised uniform. The advantage over arms
is a mixture of three Gaussian bumps of unequal heights. LAD with pi_old fixed at the initial
policy should converge to the advantage-induced target softmax(kappa * A) and keep all three
modes; GRPO and plain policy gradient maximise expected advantage and collapse onto one arm.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, Field

from lad.advantages import grpo_advantages
from lad.objectives import DIVERGENCES, get_policy_loss
from lad.storage import atomic_path


class Bump(BaseModel):
    centre: float = Field(description="arm index of the bump's peak")
    width: float = Field(gt=0, description="standard deviation, in arms")
    height: float = Field(description="advantage at the peak")


class BanditConfig(BaseModel):
    """Settings of the bandit experiment; the defaults are the paper's setting."""

    arms: int = Field(50, ge=2, description="number of arms")
    bumps: list[Bump] = Field(
        default_factory=lambda: [
            Bump(centre=10, width=2.0, height=1.0),
            Bump(centre=25, width=2.0, height=0.75),
            Bump(centre=40, width=2.0, height=0.5),
        ],
        description="the advantage over arms is the sum of these Gaussian bumps",
    )
    kappa: float = Field(4.0, gt=0, description="1/eta: the target is softmax(kappa * A)")
    steps: int = Field(4000, ge=1, description="optimiser steps per method")
    lr: float = Field(5e-3, gt=0, description="Adam learning rate")
    seed: int = Field(0, description="seeds every sampled method")
    divergences: list[str] = Field(default_factory=lambda: list(DIVERGENCES), description="LAD generators to run")
    lad_estimator: Literal["exact", "sampled"] = Field(
        "exact", description="exact expectation over all arms under pi_old, or G draws from pi_old per step"
    )
    group_size: int = Field(8, ge=2, description="G: arms sampled per step (GRPO, PG, sampled LAD)")
    clip: float = Field(0.2, gt=0, description="GRPO's PPO clip range")
    mode_window: int = Field(2, ge=0, description="a mode is the arms within +-window of a bump centre")
    history_every: int = Field(100, ge=1, description="record TV to the target every this many steps")


# --------------------------------------------------------------------------------------------
# The problem and its metrics (pure functions)
# --------------------------------------------------------------------------------------------


def advantage_landscape(cfg: BanditConfig) -> torch.Tensor:
    arms = torch.arange(cfg.arms, dtype=torch.float64)
    adv = torch.zeros(cfg.arms, dtype=torch.float64)
    for b in cfg.bumps:
        adv += b.height * torch.exp(-0.5 * ((arms - b.centre) / b.width) ** 2)
    return adv


def target_policy(adv: torch.Tensor, kappa: float) -> torch.Tensor:
    return torch.softmax(kappa * adv, dim=0)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return float(0.5 * (p - q).abs().sum())


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p || q) in nats, with 0 log 0 = 0; rounding below zero is reported as 0."""
    terms = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p))
    return max(0.0, float(terms.sum()))


def entropy(p: torch.Tensor) -> float:
    return float(-torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum())


def modes_recovered(policy: torch.Tensor, target: torch.Tensor, centres: list[float], window: int) -> int:
    """Modes where the policy holds at least half the target's mass within +-window arms."""
    count = 0
    for c in centres:
        lo, hi = max(0, round(c) - window), min(len(policy), round(c) + window + 1)
        count += int(policy[lo:hi].sum() >= 0.5 * target[lo:hi].sum())
    return count


def policy_metrics(policy: torch.Tensor, target: torch.Tensor, cfg: BanditConfig) -> dict[str, float]:
    return {
        "tv": total_variation(policy, target),
        "kl": kl_divergence(target, policy),
        "entropy": entropy(policy),
        "max_prob": float(policy.max()),
        "modes_recovered": modes_recovered(policy, target, [b.centre for b in cfg.bumps], cfg.mode_window),
    }


# --------------------------------------------------------------------------------------------
# Methods: each returns the loss for one step given the current logits
# --------------------------------------------------------------------------------------------


def _lad_step(div: str, cfg: BanditConfig, adv: torch.Tensor, gen: torch.Generator):
    uniform_logp = torch.full((cfg.arms,), -math.log(cfg.arms), dtype=torch.float64)
    lad = get_policy_loss("lad")

    def step(logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=0)
        if cfg.lad_estimator == "exact":
            # pi_old is uniform, so the token-mean over all arms is the expectation under pi_old.
            arms = torch.arange(cfg.arms)
        else:
            arms = torch.multinomial(uniform_logp.exp(), cfg.group_size, replacement=True, generator=gen)
        ones = torch.ones(len(arms), 1, dtype=torch.float64)
        loss, _ = lad(logp[arms, None], uniform_logp[arms, None], adv[arms], ones, divergence=div, kappa=cfg.kappa)
        return loss

    return step


def _grpo_step(cfg: BanditConfig, adv: torch.Tensor, gen: torch.Generator):
    grpo = get_policy_loss("grpo")

    def step(logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=0)
        arms = torch.multinomial(logp.detach().exp(), cfg.group_size, replacement=True, generator=gen)
        group_adv, _ = grpo_advantages(adv[arms][None, :])
        ones = torch.ones(cfg.group_size, 1, dtype=torch.float64)
        loss, _ = grpo(
            logp[arms, None], logp.detach()[arms, None], group_adv[0], ones, clip_low=cfg.clip, clip_high=cfg.clip
        )
        return loss

    return step


def _pg_step(cfg: BanditConfig, adv: torch.Tensor, gen: torch.Generator):
    def step(logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=0)
        arms = torch.multinomial(logp.detach().exp(), cfg.group_size, replacement=True, generator=gen)
        return -(adv[arms] * logp[arms]).mean()

    return step


def method_names(cfg: BanditConfig) -> list[str]:
    return [f"lad-{d}" for d in cfg.divergences] + ["grpo", "pg"]


def _make_step(name: str, cfg: BanditConfig, adv: torch.Tensor, gen: torch.Generator):
    if name.startswith("lad-"):
        return _lad_step(name.removeprefix("lad-"), cfg, adv, gen)
    return {"grpo": _grpo_step, "pg": _pg_step}[name](cfg, adv, gen)


def train_method(name: str, cfg: BanditConfig, adv: torch.Tensor, seed: int) -> tuple[torch.Tensor, list[float]]:
    """Optimise one method from the uniform policy; returns the final policy and its TV history."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.zeros(cfg.arms, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=cfg.lr)
    step = _make_step(name, cfg, adv, gen)
    target = target_policy(adv, cfg.kappa)
    history = []
    for t in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        step(logits).backward()
        opt.step()
        if (t + 1) % cfg.history_every == 0:
            history.append(total_variation(torch.softmax(logits.detach(), 0), target))
    return torch.softmax(logits.detach(), dim=0), history


def run_bandit(cfg: BanditConfig, progress=None) -> dict:
    """Run every method; returns the JSON-ready result {"methods", "policies", "target", "config", ...}."""
    adv = advantage_landscape(cfg)
    target = target_policy(adv, cfg.kappa)
    methods, policies, histories = {}, {}, {}
    for i, name in enumerate(method_names(cfg)):
        policy, history = train_method(name, cfg, adv, seed=cfg.seed * 1000 + i)
        methods[name] = policy_metrics(policy, target, cfg)
        policies[name] = policy.tolist()
        histories[name] = history
        if progress is not None:
            progress(name)
    return {
        "methods": methods,
        "target": target.tolist(),
        "advantage": adv.tolist(),
        "policies": policies,
        "tv_history": {"every": cfg.history_every, "values": histories},
        "config": cfg.model_dump(),
    }


def plot_bandit(result: dict, path: str) -> None:
    """Final policy of every method against the target, one panel per method, and TV over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["methods"])
    cols = 3
    rows = math.ceil(len(names) / cols) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    arms = range(len(result["target"]))
    for ax, name in zip(axes.flat, names):
        m = result["methods"][name]
        ax.bar(arms, result["policies"][name], color="tab:blue", alpha=0.7, label="policy")
        ax.plot(arms, result["target"], color="black", lw=1.2, label="target softmax(kappa A)")
        ax.set_title(f"{name}: TV {m['tv']:.3f}, modes {m['modes_recovered']}", fontsize=9)
        ax.set_ylim(0, max(max(result["target"]) * 1.6, min(1.0, max(result["policies"][name]) * 1.1)))
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    curve = fig.add_subplot(rows, 1, rows)
    every = result["tv_history"]["every"]
    for name, values in result["tv_history"]["values"].items():
        curve.plot([every * (i + 1) for i in range(len(values))], values, label=name, lw=1)
    curve.set_xlabel("step")
    curve.set_ylabel("TV to target")
    curve.legend(fontsize=7, ncol=5)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
