"""GPU check: a few LAD and GRPO steps of a ~0.5B model with DeepSpeed ZeRO-2 bf16 on one GPU.

The model has Qwen2.5-0.5B's shape, built from a config with random weights (nothing is
downloaded); prompts are random token ids and rewards random 0/1 draws, so every step does the
real work of the trainer (HF rollout with KV cache, group advantages, old log-probs, policy loss,
backward, ZeRO-2 optimizer step) on fixed-length completions, identical for both objectives.
Steps alternate GRPO / LAD on one engine; the first step of each is warm-up. Prints the time
split, completion tokens/s, MFU and the LAD / GRPO update-time ratio, for each rollout engine
asked for (``--engines hf,native``), and how far the rollout's log-probs are from the trainer's.

    python3 scripts/gpu_check.py [--engines hf,native --steps 3 --prompts 16 --group 8 --prompt-len 256 --response-len 512
                                  --checkpointing --chunk 512]

Imports only what the trainer needs (torch, transformers, deepspeed, pydantic, pyyaml); no MLflow.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lad.advantages import get_advantage  # noqa: E402
from lad.rollout import SamplingParams  # noqa: E402
from lad.rollout.hf import HFRollout  # noqa: E402
from lad.rollout.native import NativeRollout  # noqa: E402
from lad.train.engine import EngineConfig, OptimConfig, build_engine  # noqa: E402
from lad.train.memory import apply_checkpointing  # noqa: E402
from lad.train.rl import RLConfig, policy_update  # noqa: E402
from lad.train.rl_batch import Sample  # noqa: E402

# Qwen2.5-0.5B
SHAPE = dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
             intermediate_size=4864, max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


class IdTokenizer:
    """What the HF rollout needs of a tokenizer when prompts are token ids: EOS/pad ids and decode."""

    eos_token_id = 151645
    pad_token_id = 151643

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def flops_per_token(n_params: int, vocab: int, hidden: int, layers: int, context: float) -> tuple[float, float]:
    """(matmul FLOPs of one forward token without the LM head, LM head FLOPs of one token)."""
    body = 2 * (n_params - vocab * hidden) + 4 * layers * hidden * context  # weights + attention scores/values
    return body, 2 * vocab * hidden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="hf,native", help="rollout engines to check, comma-separated: hf, native")
    parser.add_argument("--steps", type=int, default=3, help="steps per objective, the first one warm-up")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--response-len", type=int, default=512)
    parser.add_argument("--micro", type=int, default=16, help="sequences per forward/backward")
    parser.add_argument("--minibatches", type=int, default=2, help="optimizer steps per rollout")
    parser.add_argument("--zero", type=int, default=2)
    parser.add_argument("--checkpointing", action="store_true", help="memory.gradient_checkpointing")
    parser.add_argument("--chunk", type=int, default=None, help="memory.logprob_chunk_size; default: whole logits")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU; default from its name")
    parser.add_argument("--cpu-smoke", action="store_true", help="a 2-layer, small-vocabulary model in fp32 on CPU, to check the script itself")
    args = parser.parse_args()
    engines = args.engines.split(",")
    if not set(engines) <= {"hf", "native"}:
        raise SystemExit(f"--engines: expected a comma-separated list of hf and native, got {args.engines!r}")
    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_smoke:
        raise SystemExit("gpu_check needs a CUDA GPU (or --cpu-smoke)")
    shape = SHAPE if not args.cpu_smoke else dict(SHAPE, vocab_size=151936, hidden_size=64, num_hidden_layers=2,
                                                   num_attention_heads=2, num_key_value_heads=1, intermediate_size=128)
    precision = "bf16" if cuda else "fp32"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    from transformers import AutoModelForCausalLM, Qwen2Config

    name = torch.cuda.get_device_name() if cuda else "CPU"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    torch.manual_seed(0)
    config = Qwen2Config(**shape, bos_token_id=None, eos_token_id=IdTokenizer.eos_token_id, pad_token_id=IdTokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    n_params = sum(p.numel() for p in model.parameters())
    b = args.prompts * args.group
    cfgs = {obj: RLConfig.model_validate({
        "data": {"train": {"synthetic": {"tasks": ["countdown"]}}},
        "rollout": {"n": args.group, "max_new_tokens": args.response_len},
        "algorithm": {"objective": obj},
        "train": {"prompts_per_step": args.prompts, "mini_batch_size": b // args.minibatches, "micro_batch_size": args.micro},
        "engine": {"name": "deepspeed", "zero_stage": args.zero, "precision": precision}, "tracking": {"enabled": False},
        "memory": {"gradient_checkpointing": args.checkpointing, "logprob_chunk_size": args.chunk},
    }) for obj in ("grpo", "lad")}
    cfg0 = cfgs["grpo"]
    apply_checkpointing(model, cfg0.memory)
    engine = build_engine(model, OptimConfig(lr=1e-6, warmup_steps=0, min_lr_ratio=1.0), EngineConfig(name="deepspeed", zero_stage=args.zero, precision=precision),
                          total_steps=10 * args.steps * cfg0.optimizer_steps(), grad_accum=cfg0.mini_batch() // args.micro,
                          micro_batch_size=args.micro)
    advantage = get_advantage("grpo")
    print(f"{name}: {'Qwen2.5-0.5B-shaped' if not args.cpu_smoke else 'smoke-test'} model, {n_params / 1e6:.0f}M parameters, DeepSpeed ZeRO-{args.zero} {precision}; "
          f"P={args.prompts} G={args.group} prompt {args.prompt_len} + response {args.response_len} tokens (fixed length); "
          f"{args.minibatches} optimizer steps per rollout, micro-batch {args.micro}; gradient checkpointing "
          f"{'on' if args.checkpointing else 'off'}, log-prob chunk {args.chunk or 'none (whole logits)'}", flush=True)
    for engine_name in engines:
        with engine.full_model() as full:
            rollout = (HFRollout if engine_name == "hf" else NativeRollout)(full, IdTokenizer(), max_batch_size=b)
        print(f"\nrollout engine {engine_name}:", flush=True)
        check(args, engine, rollout, cfgs, advantage, sync, shape, n_params, peak, name, b)
    if cuda:
        print(f"peak GPU memory allocated by torch: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)


def check(args, engine, rollout, cfgs, advantage, sync, shape, n_params, peak, name, b) -> None:
    """Alternate GRPO and LAD steps with one rollout engine; print the medians."""
    rows: dict[str, list[dict]] = {"grpo": [], "lad": []}
    for step in range(2 * args.steps):
        obj = ("grpo", "lad")[step % 2]
        rng = random.Random(step)
        prompts = [[rng.randrange(0, 150000) for _ in range(args.prompt_len)] for _ in range(args.prompts)]
        sync()
        t0 = time.perf_counter()
        with engine.full_model() as full:
            rollout.update_weights(full)
            groups = rollout.generate_ids(prompts, SamplingParams(n=args.group, max_new_tokens=args.response_len, seed=step, ignore_eos=True))
        sync()
        t1 = time.perf_counter()
        samples = [Sample(p, {}, c.prompt_token_ids, c.token_ids, c.logprobs, c.finish_reason, c.text)
                   for p, g in enumerate(groups) for c in g]
        rewards = torch.tensor([float(rng.random() < 0.5) for _ in samples]).view(args.prompts, args.group)
        adv, _ = advantage(rewards)
        for s, a in zip(samples, adv.flatten().tolist()):
            s.advantage = a
        t2 = time.perf_counter()
        metrics = policy_update(engine, samples, cfgs[obj], step, IdTokenizer.pad_token_id, None)
        sync()
        t3 = time.perf_counter()
        tokens = sum(len(s.response_ids) for s in samples)
        rows[obj].append({"gen": t1 - t0, "reward": t2 - t1, "update": t3 - t2, "step": t3 - t0, "tokens": tokens,
                          "mismatch": metrics["rollout/logprob_diff_abs_mean"], "grad_norm": metrics.get("actor/grad_norm")})
        print(f"  step {step} {obj:4s} generate {t1 - t0:6.2f}s  advantages {t2 - t1:5.3f}s  update {t3 - t2:6.2f}s  "
              f"{tokens / (t3 - t0):7.0f} completion tok/s  |logp_rollout - logp_train| {metrics['rollout/logprob_diff_abs_mean']:.4f}", flush=True)

    ctx_train = args.prompt_len + args.response_len / 2
    body, head = flops_per_token(n_params, shape["vocab_size"], shape["hidden_size"], shape["num_hidden_layers"], ctx_train)
    seq_tokens = args.prompt_len + args.response_len
    # update: forward + backward (3x forward) on every token, the LM head only on response tokens;
    # pi_old needs one more forward for every mini-batch but the first
    per_seq = 3 * (body * seq_tokens + head * args.response_len)
    per_seq_old = (1 - 1 / args.minibatches) * (body * seq_tokens + head * args.response_len)
    update_flops = b * (per_seq + per_seq_old)
    body_gen, _ = flops_per_token(n_params, shape["vocab_size"], shape["hidden_size"], shape["num_hidden_layers"], ctx_train)
    gen_flops = b * (body_gen + head) * args.response_len + b * body_gen * args.prompt_len
    print("\nmedian over timed steps (warm-up excluded):")
    med = {}
    for obj, rs in rows.items():
        timed = rs[1:] or rs
        m = {k: statistics.median(r[k] for r in timed) for k in ("gen", "reward", "update", "step")}
        med[obj] = m
        tok = timed[0]["tokens"]
        line = (f"  {obj:4s} step {m['step']:6.2f}s = generate {m['gen']:6.2f}s ({100 * m['gen'] / m['step']:.0f}%) + "
                f"advantages {m['reward']:.3f}s + update {m['update']:6.2f}s ({100 * m['update'] / m['step']:.0f}%); "
                f"{tok / m['step']:.0f} completion tok/s, {b * seq_tokens / m['update']:.0f} trained tok/s")
        if peak:
            line += (f"; MFU update {100 * update_flops / m['update'] / (peak * 1e12):.1f}%, "
                     f"generate {100 * gen_flops / m['gen'] / (peak * 1e12):.1f}%, step {100 * (update_flops + gen_flops) / m['step'] / (peak * 1e12):.1f}%")
        line += f"; |logp_rollout - logp_train| {statistics.median(r['mismatch'] for r in timed):.4f}"
        print(line)
    if peak is None:
        print(f"  (MFU not shown: unknown peak for {name!r}; pass --peak-tflops)")
    print(f"LAD / GRPO update-time ratio: {med['lad']['update'] / med['grpo']['update']:.3f} (goal <= 1.02); "
          f"step-time ratio {med['lad']['step'] / med['grpo']['step']:.3f}")


if __name__ == "__main__":
    main()
