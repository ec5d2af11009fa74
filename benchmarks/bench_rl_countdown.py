"""LAD vs GRPO on countdown from an SFT-warmed tiny model: learning, accuracy and diversity.

Runs ``lad train`` twice from the same starting model with the same seed, data, time budget and
settings (configs/train/tiny_cpu.yaml unless --config), once per objective, side by side (one
process each, one thread each), then compares the held-out evaluations the trainer wrote: the
starting policy's (step 0) and each final policy's, k samples per problem. Prints Avg@8 before
and after (goal: +10 points for each objective), Avg@k, Pass@1..k, the mean number of distinct
correct answers per problem and dist-n, writes results.json and a plot.

    lad sft configs/sft/tiny_countdown.yaml                  # the SFT warm-up on countdown first
    python benchmarks/bench_rl_countdown.py --model out/sft-tiny-countdown/model --out out/lad-vs-grpo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def launch(args, objective: str, out: Path) -> tuple[subprocess.Popen, Path]:
    from lad.study.grid import rl_run_config
    from lad.study.runner import launch as launch_child

    raw = rl_run_config(yaml.safe_load(Path(args.config).read_text()), model=args.model, output_dir=out / objective,
                        objective=objective, seed=args.seed,
                        overrides={"train.max_steps": args.steps, "train.time_budget_min": args.budget_min,
                                   "eval.k": args.k, "eval.every_steps": args.eval_every, "eval.at_start": True,
                                   "data.eval.synthetic.n_per_task": args.eval_problems})
    cfg = out / f"{objective}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    proc = launch_child(["lad.cli", "train", str(cfg)], out / f"{objective}.log", threads=args.threads, cwd=ROOT)
    return proc, out / objective


def final_and_start(run_dir: Path) -> tuple[dict, dict]:
    evals = sorted((run_dir / "eval").glob("step_*.json"))
    return json.loads(evals[0].read_text()), json.loads(evals[-1].read_text())


def metrics_of(rows: list[dict], k: int) -> dict:
    from lad.evaluation.heldout import summarize

    from lad.evaluation.metrics import avg_at_k

    m = summarize(rows, k)
    # Avg@8 from the first 8 samples of each problem, as the proof states it
    m["avg@8"] = avg_at_k([r["correct"][: min(8, k)] for r in rows])
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the SFT-warmed starting model (a directory)")
    parser.add_argument("--config", default=str(ROOT / "configs/train/tiny_cpu.yaml"))
    parser.add_argument("--out", default="out/lad-vs-grpo")
    parser.add_argument("--steps", type=int, default=1000, help="at most this many RL steps per objective")
    parser.add_argument("--budget-min", type=float, default=15.0, help="wall-clock budget of each run (both run side by side)")
    parser.add_argument("--k", type=int, default=16, help="samples per held-out problem")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-problems", type=int, default=512,
                        help="held-out problems (one evaluation's sampling noise is about 1.5 points of Avg@16 at 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--objectives", nargs="+", default=["lad", "grpo"])
    args = parser.parse_args()
    from lad.study.worker import eval_curve

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    runs = {obj: launch(args, obj, out) for obj in args.objectives}
    walls = {}
    for obj, (proc, _) in runs.items():
        if proc.wait():
            raise SystemExit(f"{obj} run failed; see {out / f'{obj}.log'}")
        walls[obj] = time.time() - t0
    results = {"config": args.config, "model": args.model, "max_steps": args.steps, "budget_min": args.budget_min,
               "seed": args.seed, "k": args.k, "runs": {}}
    start = None
    for obj, (_, run_dir) in runs.items():
        first, last = final_and_start(run_dir)
        start = start or metrics_of(first["problems"], args.k)
        results["runs"][obj] = {"wall_s": walls[obj], "steps": last["step"], "final": metrics_of(last["problems"], args.k),
                                "curve": eval_curve(run_dir)}
    results["start"] = start
    (out / "results.json").write_text(json.dumps(results, indent=2))

    k = args.k
    print(f"countdown, held-out problems: {len(first['problems'])}, {k} samples each; budget {args.budget_min} min "
          f"(at most {args.steps} steps) per objective, run side by side; seed {args.seed}")
    header = ["metric", "start"] + list(results["runs"])
    print("  " + "".join(f"{h:>14s}" for h in header))
    rows = ["avg@8", f"avg@{k}"] + [f"pass@{j}" for j in (1, 2, 4, 8, 16) if j <= k] + ["distinct_correct", "dist-1", "dist-2", "dist-3", "dist-4", "response_len_mean"]
    for name in rows:
        vals = [start[name]] + [r["final"][name] for r in results["runs"].values()]
        print("  " + f"{name:>14s}" + "".join(f"{v:14.4f}" for v in vals))
    for obj, r in results["runs"].items():
        gain = 100 * (r["final"]["avg@8"] - start["avg@8"])
        print(f"{obj}: Avg@8 {100 * start['avg@8']:.1f} -> {100 * r['final']['avg@8']:.1f} ({gain:+.1f} points, goal +10) in {r['steps']} steps, {r['wall_s'] / 60:.1f} min wall incl. evaluations")
    plot(results, out / "lad_vs_grpo.png")
    print(f"wrote {out / 'results.json'} and {out / 'lad_vs_grpo.png'}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = results["k"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    ks = list(range(1, k + 1))
    a.plot(ks, [results["start"][f"pass@{j}"] for j in ks], "k--", label="start (SFT)")
    for obj, r in results["runs"].items():
        a.plot(ks, [r["final"][f"pass@{j}"] for j in ks], marker="o", ms=3, label=obj)
        b.plot([c["step"] for c in r["curve"]], [c[f"avg@{k}"] for c in r["curve"]], marker="o", label=obj)
    a.set(xlabel="k", ylabel="Pass@k", title="held-out countdown: Pass@k after RL", xscale="log")
    b.set(xlabel="RL step", ylabel=f"Avg@{k}", title="held-out accuracy during RL")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
