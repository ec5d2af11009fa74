"""SFT warm-up of the tiny model on the synthetic tasks: wall time, throughput, and what it learned,
against the same model untrained (the baseline, measured in the same run).

Runs ``lad sft CONFIG`` in a subprocess (the command a user runs), times it, then prints the
held-out greedy metrics of the trained model next to those of the untrained model, and whether
the answer-format compliance reaches the target of the done-when (0.90).

    python benchmarks/bench_sft.py [--config configs/sft/tiny.yaml] [--output-dir out/bench-sft]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

FORMAT_TARGET = 0.90


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/sft/tiny.yaml")
    parser.add_argument("--output-dir", default="out/bench-sft")
    args = parser.parse_args()

    from lad.modeling import TINY_PREFIX, load_model
    from lad.evaluation.heldout import evaluate_heldout
    from lad.train.sft import load_config

    out = Path(args.output_dir)
    cfg = load_config(args.config, output_dir=str(out))
    if not cfg.model.startswith(TINY_PREFIX):
        sys.exit(f"{args.config}: this benchmark trains a tiny model (model: tiny:<preset>), got {cfg.model!r}")
    out.mkdir(parents=True, exist_ok=True)
    # The benchmark's own copy of the config, with tracking into a store of its own.
    raw = cfg.model_dump(mode="json")
    raw["tracking"]["tracking_uri"] = f"sqlite:///{out.resolve() / 'mlflow.db'}"
    bench_cfg = out / "config.yaml"
    bench_cfg.write_text(yaml.safe_dump(raw))

    print(f"baseline: untrained {cfg.model} on {cfg.heldout.n_per_task} held-out problems per task ...", flush=True)
    t0 = time.perf_counter()
    model, tok = load_model(cfg.model, seed=cfg.train.seed)
    base = evaluate_heldout(model, tok, cfg.heldout)
    base_eval_s = time.perf_counter() - t0

    print(f"lad sft {bench_cfg} ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lad.cli", "sft", str(bench_cfg)], env=dict(os.environ), stdout=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"lad sft failed with exit code {proc.returncode}")
    trained = json.loads((out / "metrics.json").read_text())

    steps, tokens = trained["train/steps"], trained["train/tokens_seen"]
    print()
    print(f"config {args.config}: {cfg.model}, {trained['data/examples']} examples, {steps} steps, engine {cfg.engine.name}")
    print(f"wall time of `lad sft` {wall:.1f} s (start-up, training, held-out eval, save); "
          f"{tokens / wall:.0f} tokens/s over the whole command; baseline eval alone {base_eval_s:.1f} s")
    print(f"final train loss {trained['train/final_loss']:.4f}")
    print(f"{'held-out (greedy)':<28}{'untrained':>10}{'after SFT':>10}")
    tasks = [t for t in cfg.heldout.tasks] + ["all"]
    for task in tasks:
        for metric in ("format", "eos", "accuracy"):
            key = f"heldout/{task}/{metric}"
            print(f"{task + ' ' + metric:<28}{base[key]:>10.3f}{trained[key]:>10.3f}")
    fmt = trained["heldout/all/format"]
    verdict = "meets" if fmt >= FORMAT_TARGET else "misses"
    print(f"answer-format compliance {fmt:.3f} {verdict} the target {FORMAT_TARGET:.2f}")
    (out / "bench.json").write_text(json.dumps({"wall_s": wall, "baseline": base, "trained": trained}, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
