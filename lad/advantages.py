"""Group advantages for outcome rewards: one scalar reward per response, G responses per prompt.

Every entry of ``ADVANTAGES`` maps rewards [P, G] (P prompts, G responses each) to advantages
[P, G] and a dict of metrics. A group whose rewards are all equal carries no learning signal: its
advantages are exactly zero and it is counted in ``zero_adv_group_frac``.
"""

from __future__ import annotations

from typing import Callable

import torch


def _check_groups(rewards: torch.Tensor, min_group: int) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [P prompts, G responses]; got shape {tuple(rewards.shape)}")
    if rewards.shape[1] < min_group:
        raise ValueError(f"group size G must be at least {min_group}; got {rewards.shape[1]}")


def uniform_groups(rewards: torch.Tensor) -> torch.Tensor:
    """[P] bool: groups whose rewards [P, G] are all equal (exactly: no estimator gives them signal)."""
    return (rewards == rewards[:, :1]).all(dim=1)


def _finish(adv: torch.Tensor, rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    flat = uniform_groups(rewards)
    # Exact zeros for degenerate groups, whatever rounding the formula did.
    adv = torch.where(flat.unsqueeze(1), torch.zeros_like(adv), adv)
    return adv, {
        "zero_adv_group_frac": float(flat.to(torch.float64).mean()),
        "reward_mean": float(rewards.mean()),
        "adv_abs_mean": float(adv.abs().mean()),
    }


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, dict[str, float]]:
    """(r - mean(r)) / (std(r) + eps) within each group; std is the unbiased one, as in GRPO and verl."""
    _check_groups(rewards, 2)
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=True)
    return _finish((rewards - mean) / (std + eps), rewards)


def dr_grpo_advantages(rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """r - mean(r): Dr. GRPO drops the std division, which over-weights near-uniform groups."""
    _check_groups(rewards, 1)
    return _finish(rewards - rewards.mean(dim=1, keepdim=True), rewards)


def rloo_advantages(rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """r_i - mean of the other G - 1 rewards (leave-one-out baseline), = G / (G - 1) (r_i - mean)."""
    _check_groups(rewards, 2)
    g = rewards.shape[1]
    loo_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (g - 1)
    return _finish(rewards - loo_mean, rewards)


Advantage = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]

ADVANTAGES: dict[str, Advantage] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
}


def get_advantage(name: str) -> Advantage:
    try:
        return ADVANTAGES[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {name!r}; expected one of {sorted(ADVANTAGES)}") from None
