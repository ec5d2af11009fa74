"""Cost of the LAD loss against GRPO's clipped surrogate, measured in the same run.

The paper claims LAD's update costs the same as GRPO's. The policy loss is a small part of a
training step, but it runs on every token, so this prints forward+backward time of each LAD
divergence as a ratio to GRPO on the same [B, T] batch.

    python benchmarks/bench_objectives.py [--batch 64] [--length 1024]
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.benchmark import Timer

from lad.objectives import DIVERGENCES, get_policy_loss


def time_loss(name: str, tensors, **kwargs) -> float:
    log_prob, old, adv, mask = tensors
    fn = get_policy_loss(name)

    def step():
        lp = log_prob.detach().requires_grad_(True)
        loss, _ = fn(lp, old, adv, mask, **kwargs)
        loss.backward()

    return Timer(stmt="step()", globals={"step": step}).blocked_autorange(min_run_time=1.0).median


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=1024)
    args = parser.parse_args()
    torch.manual_seed(0)
    b, t = args.batch, args.length
    old = -torch.rand(b, t) * 3
    tensors = (old + 0.1 * torch.randn(b, t), old, torch.randn(b), (torch.rand(b, t) < 0.9).float())

    base = time_loss("grpo", tensors)
    print(f"policy loss forward+backward, B={b} T={t}, float32, {torch.get_num_threads()} threads")
    print(f"{'objective':<16}{'ms':>10}{'vs grpo':>10}")
    print(f"{'grpo':<16}{base * 1e3:>10.3f}{1.0:>10.2f}x")
    for name in ("dapo", "dr_grpo"):
        s = time_loss(name, tensors)
        print(f"{name:<16}{s * 1e3:>10.3f}{s / base:>10.2f}x")
    for div in DIVERGENCES:
        s = time_loss("lad", tensors, divergence=div)
        print(f"{'lad-' + div:<16}{s * 1e3:>10.3f}{s / base:>10.2f}x")


if __name__ == "__main__":
    main()
