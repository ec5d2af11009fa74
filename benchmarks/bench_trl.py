"""This trainer vs TRL's GRPOTrainer: completion tokens per second on CPU, in one run, with the
native rollout engine (lad's own decode loop) and with the hf engine (transformers generate).

Fair terms: the same tiny model (saved once, loaded by both), the same countdown prompts, the
same G, P and max new tokens, fixed-length completions on both sides (EOS ignored here, EOS
masked by min_new_tokens in TRL: both generate exactly P x G x max_new_tokens tokens per step),
fp32, no gradient checkpointing, no reference model (beta 0), plain AdamW, one optimizer step
per rollout on the whole batch, the same number of torch threads, GRPO loss on both sides. Each
side (lad native, lad hf, TRL) runs in its own process, in turn, --reps times; the first step of
each run is warm-up and not counted. Besides the whole step, the generation share is printed
(lad: its time/generate_s; TRL: the time inside transformers' generate). TRL must be installed
in a separate virtualenv (it is never a dependency of lad):

    python3 -m venv /tmp/trl-venv && /tmp/trl-venv/bin/pip install torch==2.13.0 transformers==5.24.0 trl==1.16.0
    python benchmarks/bench_trl.py --trl-python /tmp/trl-venv/bin/python [--steps 6 --prompts 8 --group 8 --max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


def run_lad(engine: str, model_dir: Path, work: Path, args, rep: int) -> tuple[list[float], list[float]]:
    """(step seconds, generate seconds) of each step of one lad run with rollout engine ``engine``."""
    out = work / f"lad-{engine}{rep}"
    cfg = {
        "model": str(model_dir), "output_dir": str(out),
        "data": {"train": {"synthetic": {"tasks": ["countdown"], "n_per_task": args.prompts * args.steps, "seed": 0}}},
        "rollout": {"engine": engine, "n": args.group, "max_new_tokens": args.max_new_tokens, "ignore_eos": True,
                    "options": {"max_batch_size": args.prompts * args.group}},
        "algorithm": {"objective": "grpo", "kl_coef": 0.0},
        "train": {"prompts_per_step": args.prompts, "micro_batch_size": args.prompts * args.group, "max_steps": args.steps,
                  "samples_every": 0},
        "optim": {"lr": 1e-5, "max_grad_norm": 1.0}, "engine": {"name": "torch", "precision": "fp32"},
        "eval": {"at_start": False}, "checkpoint": {"every_steps": 10_000}, "tracking": {"enabled": False},
    }
    path = work / f"lad-{engine}{rep}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "lad.cli", "train", str(path)], capture_output=True, text=True, env=_env(args))
    if proc.returncode:
        raise SystemExit(f"lad train failed:\n{proc.stderr[-3000:]}")
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    lengths = {s["response/length_mean"] for s in steps}
    assert lengths == {float(args.max_new_tokens)}, f"lad completions not fixed-length: {lengths}"
    return [s["time/step_s"] for s in steps], [s["time/generate_s"] for s in steps]


def run_trl(model_dir: Path, prompts_file: Path, work: Path, args, rep: int) -> tuple[list[float], list[float]]:
    out = work / f"trl{rep}.json"
    proc = subprocess.run(
        [args.trl_python, str(Path(__file__).with_name("bench_trl_worker.py")), "--model", str(model_dir),
         "--prompts-file", str(prompts_file), "--prompts-per-step", str(args.prompts), "--group", str(args.group),
         "--max-new-tokens", str(args.max_new_tokens), "--steps", str(args.steps), "--out", str(out),
         "--workdir", str(work / f"trl{rep}")],
        capture_output=True, text=True, env=_env(args))
    if proc.returncode:
        raise SystemExit(f"TRL worker failed:\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    assert set(result["mean_completion_length"]) == {float(args.max_new_tokens)}, result["mean_completion_length"]
    return result["step_s"], result["generate_s"]


def _env(args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    env["MKL_NUM_THREADS"] = str(args.threads)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trl-python", required=True, help="python of a virtualenv with trl==1.16.0")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from lad.data.synthetic import generate
    from lad.modeling import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        work = Path(tmp)
        model, tok = build_tiny_model("1m", seed=0)
        model_dir = work / "model"
        model.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
        prompts_file = work / "prompts.json"
        prompts_file.write_text(json.dumps([r["prompt"] for r in generate("countdown", args.prompts * args.steps, seed=0)]))
        sides = {"lad native": lambda rep: run_lad("native", model_dir, work, args, rep),
                 "lad hf": lambda rep: run_lad("hf", model_dir, work, args, rep),
                 "trl": lambda rep: run_trl(model_dir, prompts_file, work, args, rep)}
        times: dict[str, list[float]] = {side: [] for side in sides}
        gen: dict[str, list[float]] = {side: [] for side in sides}
        for rep in range(args.reps):
            for side, run in sides.items():
                step_s, generate_s = run(rep)
                times[side] += step_s[1:]
                gen[side] += generate_s[1:]
            print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    tokens = args.prompts * args.group * args.max_new_tokens
    print(f"tiny model, P={args.prompts} G={args.group} max_new_tokens={args.max_new_tokens} (fixed length), "
          f"{tokens} completion tokens per step, fp32 CPU, {args.threads} thread(s), {args.steps - 1} timed steps x {args.reps} runs per side")
    rates = {}
    for side, ts in times.items():
        step, generate = statistics.median(ts), statistics.median(gen[side])
        rates[side] = tokens / step
        print(f"  {side:10s} median step {step:7.3f} s (generate {generate:6.3f} s, rest {step - generate:6.3f} s)"
              f"  -> {rates[side]:8.1f} completion tokens/s")
    for side in ("lad native", "lad hf"):
        print(f"{side} / TRL throughput: {rates[side] / rates['trl']:.2f}x (goal >= 2x)")


if __name__ == "__main__":
    main()
