"""Peak memory of one RL update on SmolLM2-135M-Instruct: plain vs gradient checkpointing vs
checkpointing + chunked log-probs (``memory`` settings), as ratios to the plain peak measured in
the same run (goal: the full combination <= 0.4x the plain peak).

    python benchmarks/bench_memory.py [--prompts 4 --group 4 --prompt-tokens 64 --response-tokens 512
                                       --micro-batch 4 --chunk 128 --json out.json]
    python benchmarks/bench_memory.py --estimate     # the formula's table for the Qwen2.5 presets

Method: each variant runs in a fresh child process (this script with ``--variant``), so no
variant inherits another's allocator high-water mark. The child loads the model (float32, the
torch engine), builds the engine and runs one warm-up update on one-token sequences, which
allocates Adam's moments as every update after the first has them; it then reads its resident
set size (the baseline: libraries, weights, moments), runs ``lad.train.rl.policy_update`` once on
P x G sequences of random tokens of fixed lengths (one mini-batch: forward, backward, AdamW
step) and reports its peak resident set size (``ru_maxrss``). The update's own memory is peak -
baseline: gradients, activations, logits. Both are printed with their ratios, and beside the
measurement the formula's estimate of the update's own memory (``lad.train.memory_estimate``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "plain": {},
    "checkpointing": {"gradient_checkpointing": True},
    "checkpointing+chunked": {"gradient_checkpointing": True, "logprob_chunk_size": None},  # chunk from --chunk
}
MODEL = "smollm2-135m-instruct"

# (model, ZeRO stage, GPUs) rows of the estimate; micro-batch 4 of 2048 prompt + 8192 response tokens
ESTIMATE_ROWS = [("Qwen2.5-0.5B-Instruct", 2, 1), ("Qwen2.5-0.5B-Instruct", 2, 8), ("Qwen2.5-1.5B-Instruct", 2, 8),
                 ("Qwen2.5-7B", 2, 8), ("Qwen2.5-7B", 3, 8), ("Qwen2.5-7B", 3, 16)]


def print_estimate(micro_batch: int = 4, prompt_len: int = 2048, response_len: int = 8192, chunk: int = 512) -> None:
    """The formula's peak GPU memory per process for the Qwen2.5 presets (bf16 DeepSpeed)."""
    from lad.train.memory_estimate import SHAPES, ModelShape, peak_bytes, state_bytes

    gib = 2**30
    print(f"estimated peak GPU memory per process (GiB): bf16, micro-batch {micro_batch} x ({prompt_len} + {response_len}) tokens, "
          f"log-prob chunk {chunk}")
    print(f"| model | params | ZeRO | GPUs | states | plain | checkpointing | checkpointing + chunked |")
    print("|---|---|---|---|---|---|---|---|")
    for name, stage, gpus in ESTIMATE_ROWS:
        shape = ModelShape.from_config(SHAPES[name])
        kw = {"micro_batch": micro_batch, "seq_len": prompt_len + response_len, "response_len": response_len, "zero_stage": stage, "world": gpus}
        peaks = [peak_bytes(shape, checkpointing=c, logprob_chunk=k, **kw) / gib for c, k in ((False, None), (True, None), (True, chunk))]
        states = state_bytes(shape.params, zero_stage=stage, world=gpus) / gib
        print(f"| {name} | {shape.params / 1e9:.2f}B | {stage} | {gpus} | {states:.1f} | " + " | ".join(f"{p:.1f}" for p in peaks) + " |")


def rss_bytes() -> int:
    """Current resident set size (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_variant(args) -> dict:
    import torch

    from lad.modeling import load_model
    from lad.train.engine import TorchEngine
    from lad.train.memory import apply_checkpointing
    from lad.train.rl import RLConfig, policy_update
    from lad.train.rl_batch import Sample

    memory = dict(VARIANTS[args.variant])
    if "logprob_chunk_size" in memory:
        memory["logprob_chunk_size"] = args.chunk
    cfg = RLConfig.model_validate({
        "data": {"train": {"synthetic": {"tasks": ["countdown"]}}},
        "rollout": {"n": args.group, "max_new_tokens": args.response_tokens},
        "train": {"prompts_per_step": args.prompts, "micro_batch_size": args.micro_batch},
        "optim": {"lr": 1e-6}, "engine": {"name": "torch", "precision": "fp32"}, "tracking": {"enabled": False},
        "memory": memory,
    })
    model, _ = load_model(args.model_dir)
    apply_checkpointing(model, cfg.memory)
    engine = TorchEngine(model, cfg.optim, cfg.engine, total_steps=2, grad_accum=cfg.mini_batch() // args.micro_batch)
    vocab = model.config.vocab_size
    rng = random.Random(0)

    def batch(prompt_tokens: int, response_tokens: int) -> list[Sample]:
        out = []
        for p in range(args.prompts):
            prompt = [rng.randrange(1, vocab) for _ in range(prompt_tokens)]
            for g in range(args.group):
                resp = [rng.randrange(1, vocab) for _ in range(response_tokens)]
                s = Sample(p, {}, prompt, resp, [-5.0] * len(resp), "length", "")
                s.advantage = (-1.0) ** g
                out.append(s)
        return out

    policy_update(engine, batch(1, 1), cfg, step=0, pad_id=0, ref_model=None)
    baseline = rss_bytes()
    t0 = time.perf_counter()
    metrics = policy_update(engine, batch(args.prompt_tokens, args.response_tokens), cfg, step=1, pad_id=0, ref_model=None)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {"variant": args.variant, "memory": memory, "baseline_bytes": baseline, "peak_bytes": peak,
            "update_bytes": peak - baseline, "update_s": seconds, "loss": metrics["actor/loss"],
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4, help="P")
    parser.add_argument("--group", type=int, default=4, help="G")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--response-tokens", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=4, help="sequences per forward/backward")
    parser.add_argument("--chunk", type=int, default=128, help="memory.logprob_chunk_size of the chunked variant")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--estimate", action="store_true", help="print the formula's per-preset GPU table only (no measurement)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    if args.estimate:
        print_estimate()
        return

    from lad.modeling import resolve_model_dir
    from lad.train.memory_estimate import ModelShape, update_bytes

    model_dir, _ = resolve_model_dir(MODEL)  # converted once, outside the measured processes
    shape = ModelShape.from_config(json.loads((Path(model_dir) / "config.json").read_text()))
    results = []
    for name in VARIANTS:
        child = subprocess.run([sys.executable, __file__, "--variant", name, "--model-dir", model_dir,
                                *[f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                                  ("prompts", "group", "prompt_tokens", "response_tokens", "micro_batch", "chunk")]],
                               capture_output=True, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    plain = results[0]
    gib = 2**30
    seq = args.prompt_tokens + args.response_tokens
    print(f"one RL update of {MODEL} ({shape.params / 1e6:.0f}M parameters, float32, torch engine): P {args.prompts} x G {args.group}, "
          f"{args.prompt_tokens} prompt + {args.response_tokens} response tokens, micro-batches of {args.micro_batch}, "
          f"log-prob chunk {args.chunk}; torch threads {plain['torch_threads']}; each variant in a fresh process, peak = ru_maxrss")
    print(f"{'variant':24s} {'peak GiB':>9s} {'x plain':>8s} {'update GiB':>11s} {'x plain':>8s} {'formula GiB':>12s} {'time s':>7s}")
    for r in results:
        m = r["memory"]
        estimate = update_bytes(shape, micro_batch=args.micro_batch, seq_len=seq, response_len=args.response_tokens,
                                checkpointing=m.get("gradient_checkpointing", False), logprob_chunk=m.get("logprob_chunk_size"))
        r["formula_update_bytes"] = estimate
        print(f"{r['variant']:24s} {r['peak_bytes'] / gib:9.2f} {r['peak_bytes'] / plain['peak_bytes']:8.3f} "
              f"{r['update_bytes'] / gib:11.2f} {r['update_bytes'] / plain['update_bytes']:8.3f} {estimate / gib:12.2f} {r['update_s']:7.1f}")
    full = results[-1]
    print(f"checkpointing + chunked log-probs: {full['peak_bytes'] / plain['peak_bytes']:.3f}x the plain peak "
          f"({full['update_bytes'] / plain['update_bytes']:.3f}x the plain update's own memory); goal <= 0.4x")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k not in ("json", "variant", "model_dir")},
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
