"""Rollout speed on a real pretrained model: completion tokens/s of the native engine against
transformers generate (the hf engine) on SmolLM2-135M-Instruct, in the same run.

Both engines sample the same batch (GSM8K prompts, G completions each, ignore_eos so every
completion is exactly --tokens long) at 1 and 2 intra-op threads, alternating engines within
each repetition so that machine noise hits both alike; prints tokens/s and the ratio native / hf
(goal >= 1.5). ``--profile`` adds a torch.profiler table of where the native engine's time goes.
Two threads per process only help when the machine's other jobs leave both cores free.

    python benchmarks/bench_rollout_real.py [--prompts 4 --group 8 --tokens 256 --threads 1,2 --reps 1 --profile]
"""

from __future__ import annotations

import argparse
import time

import torch

from lad.evaluation.benchmarks import load_records, resolve
from lad.evaluation.config import BenchmarkOverrides, EvalConfig
from lad.modeling import load_model
from lad.rollout import SamplingParams, build_rollout


def gsm8k_prompts(n: int) -> list[list[dict]]:
    over = BenchmarkOverrides(name="gsm8k", k=1, limit=n)
    cfg = EvalConfig(model="unused", benchmarks=[over])
    return [r["prompt"] for r in load_records(resolve(over, cfg), cfg)]


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
    args = parser.parse_args()

    model, tok = load_model(args.model)
    model.eval()
    prompts = gsm8k_prompts(args.prompts)
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


if __name__ == "__main__":
    main()
