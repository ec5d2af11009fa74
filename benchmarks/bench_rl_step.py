"""LAD vs GRPO: time of one trainer update step on the same rollout batch, in the same run.

The paper claims LAD's update costs what GRPO's does (one forward/backward per sample). This
times ``lad.train.rl.policy_update`` (old log-probs, forward, loss, backward, optimizer step over
mini- and micro-batches) with each objective on the very same batch of sequences, alternating
the two so that machine noise hits both alike, and prints the median times and their ratio
(goal: LAD / GRPO <= 1.02).

    python benchmarks/bench_rl_step.py [--prompts 8 --group 8 --prompt-len 32 --response-len 128 --reps 7]
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time

import torch

from lad.train.engine import TorchEngine
from lad.train.rl import RLConfig, policy_update
from lad.train.rl_batch import Sample


def model_from_config(vocab: int, hidden: int, layers: int, seed: int):
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                         num_key_value_heads=max(1, hidden // 256), intermediate_size=hidden * 3, max_position_embeddings=4096,
                         tie_word_embeddings=True, pad_token_id=0)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def rollout_batch(prompts: int, group: int, prompt_len: int, response_len: int, vocab: int, seed: int) -> list[Sample]:
    """P x G sequences of random tokens; response lengths vary, rewards 0/1 give group advantages."""
    rng = random.Random(seed)
    out = []
    for p in range(prompts):
        prompt = [rng.randrange(1, vocab) for _ in range(prompt_len)]
        rewards = [float(rng.random() < 0.5) for _ in range(group)]
        mean = sum(rewards) / group
        std = statistics.stdev(rewards) if len(set(rewards)) > 1 else 0.0
        for r in rewards:
            n = rng.randint(response_len // 2, response_len)
            resp = [rng.randrange(1, vocab) for _ in range(n)]
            s = Sample(p, {}, prompt, resp, [-5.0] * n, "stop", "")
            s.advantage = (r - mean) / (std + 1e-6) if std else 0.0
            out.append(s)
    return out


def config(objective: str, args) -> RLConfig:
    return RLConfig.model_validate({
        "data": {"train": {"synthetic": {"tasks": ["countdown"]}}},
        "rollout": {"n": args.group, "max_new_tokens": args.response_len},
        "algorithm": {"objective": objective},
        "train": {"prompts_per_step": args.prompts, "mini_batch_size": args.prompts * args.group // args.minibatches,
                  "micro_batch_size": args.micro},
        "optim": {"lr": 1e-5}, "engine": {"name": "torch"}, "tracking": {"enabled": False},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--response-len", type=int, default=128)
    parser.add_argument("--micro", type=int, default=16)
    parser.add_argument("--minibatches", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()

    samples = rollout_batch(args.prompts, args.group, args.prompt_len, args.response_len, args.vocab, seed=0)
    base = model_from_config(args.vocab, args.hidden, args.layers, seed=0)
    runs = {}
    for objective in ("lad", "grpo"):
        cfg = config(objective, args)
        engine = TorchEngine(copy.deepcopy(base), cfg.optim, cfg.engine, total_steps=10 * args.reps,
                             grad_accum=cfg.mini_batch() // args.micro)
        runs[objective] = (cfg, engine)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for rep in range(args.reps + 1):  # rep 0 warms up
        for objective in (("lad", "grpo") if rep % 2 else ("grpo", "lad")):
            cfg, engine = runs[objective]
            batch = [copy.copy(s) for s in samples]  # fresh old log-probs each step
            t0 = time.perf_counter()
            policy_update(engine, batch, cfg, step=rep, pad_id=0, ref_model=None)
            if rep:
                times[objective].append(time.perf_counter() - t0)
    tokens = sum(len(s.response_ids) for s in samples)
    params = sum(p.numel() for p in base.parameters())
    print(f"update step: {len(samples)} sequences, {tokens} response tokens, {args.minibatches} mini-batches of "
          f"micro-batches of {args.micro}; model {params / 1e6:.1f}M parameters; torch threads {torch.get_num_threads()}")
    for objective, ts in times.items():
        print(f"  {objective:5s} median {statistics.median(ts) * 1e3:8.1f} ms  (min {min(ts) * 1e3:.1f}, max {max(ts) * 1e3:.1f}, n={len(ts)})")
    ratio = statistics.median(times["lad"]) / statistics.median(times["grpo"])
    paired = statistics.median(a / b for a, b in zip(times["lad"], times["grpo"]))
    # Noise on a shared machine only ever adds time, so the fastest step of each is the least
    # disturbed measurement of what the step costs.
    fastest = min(times["lad"]) / min(times["grpo"])
    print(f"LAD / GRPO step time: {ratio:.3f} (median of paired ratios {paired:.3f}, fastest vs fastest "
          f"{fastest:.3f}; goal <= 1.02)")
    loss_ms = loss_times(args)
    print(f"the loss alone (forward + backward on one [{args.micro}, {args.response_len}] micro-batch): "
          f"LAD {loss_ms['lad']:.3f} ms, GRPO {loss_ms['grpo']:.3f} ms, ratio {loss_ms['lad'] / loss_ms['grpo']:.3f}")


def loss_times(args, iters: int = 300) -> dict[str, float]:
    """Milliseconds per forward + backward of each objective's loss alone (defaults as in the
    trainer), interleaved, best of three rounds: what the objective adds to a micro-batch."""
    from lad.objectives import BatchNorm, get_policy_loss

    g = torch.Generator().manual_seed(0)
    logp = -3 * torch.rand(args.micro, args.response_len, generator=g)
    old = logp + 0.01 * torch.randn(args.micro, args.response_len, generator=g)
    adv = torch.randn(args.micro, generator=g)
    mask = (torch.arange(args.response_len) < args.response_len * 3 // 4).float().expand(args.micro, -1)
    norm = BatchNorm(num_tokens=float(mask.sum()) * 4, num_seqs=4.0 * args.micro)
    best: dict[str, float] = {}
    for _ in range(3):
        for objective, agg in (("lad", "token-mean"), ("grpo", "seq-mean-token-mean")):
            fn = get_policy_loss(objective)
            t0 = time.perf_counter()
            for _ in range(iters):
                x = logp.clone().requires_grad_()
                loss, _ = fn(x, old, adv, mask, norm=norm, norm_constant=float(args.response_len), loss_agg_mode=agg)
                loss.backward()
            ms = (time.perf_counter() - t0) / iters * 1e3
            best[objective] = min(best.get(objective, ms), ms)
    return best


if __name__ == "__main__":
    main()
