"""Rollout speed on a real pretrained model: completion tokens/s of the native engine against
transformers generate (the hf engine) on SmolLM2-135M-Instruct, in the same run.

Both engines sample the same batch (GSM8K prompts, G completions each, ignore_eos so every
completion is exactly --tokens long) at 1 and 2 intra-op threads, alternating engines within
each repetition so that machine noise hits both alike; prints tokens/s and the ratio native / hf
(goal >= 1.5). ``--profile`` adds a torch.profiler table of where the native engine's time goes.
``--rl-steps N`` then runs N steps of ``lad train`` on the same prompts with the preset
smollm2-135m-cpu (LAD, native engine, P and G as above, the token budget as a cap) and prints
where an RL step's time goes: generation, reward, update. Two threads per process only help when
the machine's other jobs leave both cores free.

    python benchmarks/bench_rollout_real.py [--prompts 4 --group 8 --tokens 256 --threads 1,2 --reps 1 --profile --rl-steps 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from statistics import fmean

import torch

from lad.evaluation.benchmarks import load_records, resolve
from lad.evaluation.config import BenchmarkOverrides, EvalConfig
from lad.modeling import load_model
from lad.rollout import SamplingParams, build_rollout


def gsm8k_records(n: int) -> list[dict]:
    over = BenchmarkOverrides(name="gsm8k", k=1, limit=n)
    cfg = EvalConfig(model="unused", benchmarks=[over])
    return load_records(resolve(over, cfg), cfg)


def rl_step_split(model: str, records: list[dict], group: int, tokens: int, steps: int, threads: int) -> dict[str, float]:
    """Mean seconds per RL step in generation, reward and update over ``steps`` steps of lad train
    (the first step, which warms the allocator, is left out when there are more)."""
    from lad.train.rl import load_config, train_rl

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in records))
        cfg = load_config(Path(__file__).parents[1] / "configs/train/smollm2-135m-cpu.yaml", **{
            "model": model, "output_dir": f"{tmp}/run", "data.train": {"path": str(data)}, "data.eval": {"path": str(data), "limit": 1},
            "rollout.n": group, "rollout.max_new_tokens": tokens, "train.prompts_per_step": len(records),
            "train.max_steps": steps, "train.samples_every": 0, "eval.every_steps": 0, "eval.at_start": False,
            "checkpoint.every_steps": steps + 1, "tracking.enabled": False})
        train_rl(cfg)
        rows = [json.loads(line) for line in (Path(tmp) / "run/steps.jsonl").read_text().splitlines()]
    rows = rows[1:] if len(rows) > 1 else rows
    out = {part: fmean(r[f"time/{part}_s"] for r in rows) for part in ("generate", "reward", "update", "step")}
    out["response_tokens"] = fmean(r["response/length_mean"] for r in rows)
    return out


def tokens_per_s(engine, prompts, params: SamplingParams) -> float:
    t0 = time.perf_counter()
    groups = engine.generate(prompts, params)
    dt = time.perf_counter() - t0
    return sum(len(c.token_ids) for g in groups for c in g) / dt


# Operators by what they compute in a decoder step (the rest: norms, rotary, sampling, copies).
GROUPS = {"projections and lm_head (aten::mm)": ("aten::mm",),
          "attention (bmm, baddbmm, softmax, sdpa)": ("aten::bmm", "aten::baddbmm", "aten::_softmax",
                                                      "aten::_scaled_dot_product_flash_attention_for_cpu")}


def profile_native(engine, prompts, params: SamplingParams, rows: int) -> None:
    """Self CPU time per operator over one short native call, one thread: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.generate(prompts, params)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\nnative engine profile ({params.max_new_tokens} tokens, 1 thread): self CPU time, total {total / 1e6:.2f} s")
    for group, keys in GROUPS.items():
        share = sum(e.self_cpu_time_total for e in events if e.key in keys) / total
        print(f"  {group:45s} {100 * share:5.1f} %")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]:
        print(f"  {e.key:45s} {e.self_cpu_time_total / 1e6:7.2f} s  {100 * e.self_cpu_time_total / total:5.1f} %  calls {e.count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="any model reference (lad.modeling.load_model)")
    parser.add_argument("--prompts", type=int, default=4, help="P")
    parser.add_argument("--group", type=int, default=8, help="G")
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per completion (ignore_eos)")
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts, comma-separated")
    parser.add_argument("--reps", type=int, default=1, help="timed calls per engine and thread count")
    parser.add_argument("--profile", action="store_true", help="also profile one native call of 32 tokens at 1 thread")
    parser.add_argument("--rl-steps", type=int, default=0, help="also time this many lad train steps (generate / reward / update)")
    args = parser.parse_args()

    model, tok = load_model(args.model)
    model.eval()
    records = gsm8k_records(args.prompts)
    prompts = [r["prompt"] for r in records]
    engines = {"native": build_rollout("native", model, tok, max_batch_size=args.prompts * args.group),
               "hf": build_rollout("hf", model, tok, max_batch_size=args.prompts * args.group)}
    params = SamplingParams(n=args.group, temperature=1.0, max_new_tokens=args.tokens, ignore_eos=True, seed=0)
    warm = SamplingParams(n=2, max_new_tokens=4, ignore_eos=True, seed=0)
    print(f"{args.model}: {args.prompts} GSM8K prompts x G={args.group} x {args.tokens} new tokens (ignore_eos), "
          f"float32, {args.reps} timed call(s) per engine")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for engine in engines.values():
            engine.generate(prompts[:1], warm)
        rates: dict[str, list[float]] = {name: [] for name in engines}
        for rep in range(args.reps):
            for name in (("native", "hf") if rep % 2 == 0 else ("hf", "native")):
                rates[name].append(tokens_per_s(engines[name], prompts, params))
        best = {name: max(r) for name, r in rates.items()}  # noise only ever slows a call down
        print(f"  {threads} thread(s): native {best['native']:7.1f} tok/s, hf {best['hf']:7.1f} tok/s, "
              f"native / hf {best['native'] / best['hf']:.2f}x (goal >= 1.5)")
    if args.profile:
        profile_native(engines["native"], prompts, params.model_copy(update={"max_new_tokens": 32}), rows=15)
    if args.rl_steps:
        threads = max(int(t) for t in args.threads.split(","))
        split = rl_step_split(args.model, records, args.group, args.tokens, args.rl_steps, threads)
        print(f"\nlad train, {args.rl_steps} step(s) of P={args.prompts} x G={args.group}, at most {args.tokens} new tokens "
              f"(mean {split['response_tokens']:.0f}), {threads} thread(s), per step: generate {split['generate']:.1f} s "
              f"({100 * split['generate'] / split['step']:.0f}%), reward {split['reward']:.2f} s, update {split['update']:.1f} s "
              f"({100 * split['update'] / split['step']:.0f}%), step {split['step']:.1f} s")


if __name__ == "__main__":
    main()
