"""One run of a study, in its own process: RL training (resumed from its checkpoint if one exists),
the test evaluation of the final model, and the run's result, published last.

    python -m lad.study.worker RUN_DIR

RUN_DIR holds train.yaml (the RL config) and run.json (the arm, the seed and the test evaluation's
config; with "train": false, the warm start's folder, only the evaluation runs). The trainer writes model/ and then metrics.json, so a metrics.json means training is
done; the evaluation resumes its own samples; result.json appears, atomically, only when
everything else is, and is what marks the run finished for ``lad study``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from statistics import fmean

from lad.storage import write_atomic

RESULT = "result.json"
# the warm start's own test evaluation: a run.json with "train": false, in OUTPUT/warm_start_test
WARM_START_ARM = "warm-start"
WARM_START_TEST = "warm_start_test"
TEST_METRICS = ("avg@8", "pass@1", "pass@4", "pass@16", "maj@8", "distinct_correct", "dist-3", "dist-4", "response_len")
# per-problem scores kept for the paired bootstrap against the reference arm
PAIRED = ("avg@8", "pass@16", "distinct_correct")


def run_one(run_dir: Path) -> dict:
    from lad.evaluation.config import EvalConfig
    from lad.evaluation.stage import run_eval
    from lad.train.rl import load_config, train_rl

    spec = json.loads((run_dir / "run.json").read_text())
    trains = spec.get("train", True)
    started = time.perf_counter()
    if trains and not (run_dir / "metrics.json").is_file():
        train_rl(load_config(run_dir / "train.yaml"), resume=True)
    eval_cfg = EvalConfig.model_validate(spec["test"])
    summary = run_eval(eval_cfg)
    trained = train_record(run_dir) if trains else {"steps": 0, "train_s": 0.0, "validation": []}
    result = {"arm": spec["arm"], "seed": spec["seed"], **trained,
              "test": test_record(eval_cfg, summary), "last_attempt_s": time.perf_counter() - started}
    write_atomic(run_dir / RESULT, json.dumps(result, indent=2, sort_keys=True))
    return result


def train_record(run_dir: Path) -> dict:
    """Steps, training time and the validation curve, from the trainer's files.

    train_s sums the steps' own times (time/step_s): a resumed run's log holds each step once,
    so it is the cost of the run whatever the interruptions, evaluations excluded.
    """
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines() if line]
    return {"steps": len(steps), "train_s": sum(s["time/step_s"] for s in steps), "validation": eval_curve(run_dir)}


def eval_curve(run_dir: Path) -> list[dict]:
    """[{step, avg@k}] of the trainer's periodic evaluations (DIR/eval/step_*.json), in step order."""
    curve = []
    for path in sorted((run_dir / "eval").glob("step_*.json")):
        entry = json.loads(path.read_text())
        curve.append({"step": entry["step"], **{k: v for k, v in entry["metrics"].items() if k.startswith("avg@")}})
    return curve


def test_record(eval_cfg, summary: dict) -> dict:
    """The table's test metrics, the Pass@k curve and the per-problem scores of one run.

    Avg@8 and maj@8 are those of the first 8 of the k samples per problem (maj@k depends on k);
    Pass@k, distinct correct answers and dist-n use all k.
    """
    from lad.evaluation.benchmarks import load_records, resolve
    from lad.evaluation.metrics import distinct_correct
    from lad.evaluation.results import read_samples
    from lad.evaluation.scoring import SCORERS
    from lad.evaluation.stage import summarise_benchmark
    from lad.evaluation.summary import by_problem

    bench = resolve(eval_cfg.benchmarks[0], eval_cfg)
    whole = summary["benchmarks"][bench.name]
    records = load_records(bench, eval_cfg)
    rows = read_samples(Path(eval_cfg.output) / "samples" / f"{bench.name}.jsonl")[0]
    scorer = SCORERS[bench.scorer](eval_cfg)
    try:
        first8 = summarise_benchmark(bench.model_copy(update={"k": 8}), records, [r for r in rows if r["sample"] < 8], scorer, eval_cfg)
        problems = by_problem(rows)
        ids = [r["extra_info"]["index"] for r in records]
        answers = [[r["answer"] for r in problems[p] if r["answer"] is not None] for p in ids]
        classes = scorer.answer_classes(answers, records)
    finally:
        scorer.close()
    per_problem = {"avg@8": [], "pass@16": [], "distinct_correct": []}
    for pid, labels in zip(ids, classes):
        samples = problems[pid]
        correct = [bool(r["correct"]) for r in samples]
        per_problem["avg@8"].append(fmean(correct[:8]))
        per_problem["pass@16"].append(float(any(correct[:16])))
        per_problem["distinct_correct"].append(float(distinct_correct(
            [r["answer"] for r in samples], correct, lambda a, b: labels.get(a, -1) == labels.get(b, -2))))
    metrics = {"avg@8": first8["avg@8"], "maj@8": first8["maj@8"], "response_len": whole["response_tokens"]["mean"],
               **{m: whole[m] for m in ("pass@1", "pass@4", "pass@16", "distinct_correct", "dist-3", "dist-4")}}
    return {"k": bench.k, "problems": ids, "metrics": metrics, "pass_curve": whole["pass@k_curve"], "per_problem": per_problem}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m lad.study.worker RUN_DIR")
    run_one(Path(sys.argv[1]))
