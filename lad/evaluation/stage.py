"""The evaluation stage: k samples per problem, scored, appended as they come; summary and report.

    run_eval(cfg) -> summary dict; writes under cfg.output:
        samples/<benchmark>.jsonl       one line per sample (see lad.evaluation.results)
        samples/<benchmark>.meta.json   the settings those samples were made with
        summary.json                    per benchmark and aggregate metrics
        report.md, report.html, plots/  the readable report

Work goes in batches of ``problems_per_batch`` problems: generate the missing samples of each,
score them, append them. A rerun with the same settings skips every sample already in the
JSONL, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

from lad.evaluation.benchmarks import BenchmarkRun, load_records, resolve
from lad.evaluation.config import ConfigError, EvalConfig
from lad.evaluation.results import SampleLog, discard, model_fingerprint
from lad.evaluation.scoring import SCORERS, Scorer
from lad.evaluation.summary import aggregate, benchmark_summary, by_problem
from lad.storage import write_atomic

SUMMARY = "summary.json"

# progress(benchmark, samples done, samples total)
Progress = Callable[[str, int, int], None]


def batch_seed(seed: int, benchmark: str, problem_id: int, first_sample: int) -> int:
    """The sampling seed of a batch, fixed by the run seed and where the batch starts."""
    digest = hashlib.sha256(f"{seed}|{benchmark}|{problem_id}|{first_sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def run_settings(run: BenchmarkRun, cfg: EvalConfig) -> dict:
    """What the samples of a benchmark depend on; resuming under other settings is refused.

    How many problems are evaluated (limit, a synthetic set's n) is left out: problem i is the
    same problem whatever the count, so a run can be extended to more problems, or summarised
    on fewer, without redoing any sample.
    """
    benchmark = run.model_dump(exclude={"limit"})
    benchmark["source"] = {key: v for key, v in benchmark["source"].items() if key != "n"}
    return {
        "model": cfg.model,
        "model_fingerprint": model_fingerprint(cfg.model),
        "benchmark": benchmark,
        "engine": cfg.engine,
        "engine_options": cfg.engine_options,
        "dtype": cfg.dtype,
        "seed": cfg.seed,
        "template": cfg.template.model_dump(),
    }


# checkpoint folder names that say nothing about the model: the label takes the parent's name too
_GENERIC_NAMES = {"model", "final", "checkpoint", "hf"}


def _label(cfg: EvalConfig) -> str:
    if cfg.label:
        return cfg.label
    path = Path(cfg.model.rstrip("/"))
    if path.name in _GENERIC_NAMES and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name or cfg.model


def _build_engine(cfg: EvalConfig):
    import torch

    from lad.modeling import load_model
    from lad.rollout import build_rollout

    dtype = getattr(torch, cfg.dtype) if cfg.dtype else None
    model, tokenizer = load_model(cfg.model, dtype=dtype)
    try:
        return build_rollout(cfg.engine, model, tokenizer, **cfg.engine_options)
    except (TypeError, ValueError) as err:  # an unknown or ill-typed engine option
        raise ConfigError(f"engine {cfg.engine!r} with engine_options {cfg.engine_options}: {err}") from None


def _todo(records: list[dict], k: int, done: set[tuple[int, int]]) -> list[tuple[dict, list[int]]]:
    """Each record with the sample indices it still lacks (records with none left out)."""
    out = []
    for r in records:
        pid = r["extra_info"]["index"]
        missing = [s for s in range(k) if (pid, s) not in done]
        if missing:
            out.append((r, missing))
    return out


def _sample_row(run: BenchmarkRun, record: dict, sample: int, completion, verdict) -> dict:
    info = record["extra_info"]
    return {
        "benchmark": run.name,
        "problem_id": info["index"],
        "source_id": info.get("source_id"),
        "sample": sample,
        "response": completion.text,
        "answer": verdict.answer,
        "correct": verdict.correct,
        "reason": verdict.reason,
        "tokens": len(completion.token_ids),
        "finish_reason": completion.finish_reason,
    }


def evaluate_benchmark(
    run: BenchmarkRun, records: list[dict], log: SampleLog, engine, scorer: Scorer, cfg: EvalConfig,
    progress: Optional[Progress] = None,
) -> int:
    """Generate and score every missing sample of a benchmark; returns how many were generated."""
    from lad.rollout.base import SamplingParams

    todo = _todo(records, run.k, log.done())
    total = len(records) * run.k
    done = total - sum(len(m) for _, m in todo)
    if progress:
        progress(run.name, done, total)
    generated = 0
    for start in range(0, len(todo), cfg.problems_per_batch):
        batch = todo[start : start + cfg.problems_per_batch]
        # one generate call per distinct number of missing samples (normally all k)
        groups: dict[tuple[int, ...], list[dict]] = {}
        for record, missing in batch:
            groups.setdefault(tuple(missing), []).append(record)
        rows = []
        for missing, group in groups.items():
            first = group[0]["extra_info"]["index"]
            params = SamplingParams(
                n=len(missing), seed=batch_seed(cfg.seed, run.name, first, missing[0]), **run.sampling.model_dump()
            )
            completions = engine.generate([r["prompt"] for r in group], params)
            if len(completions) != len(group) or any(len(c) != len(missing) for c in completions):
                raise RuntimeError(f"rollout engine {cfg.engine!r} returned the wrong number of completions")
            flat = [(r, s, c) for r, cs in zip(group, completions) for s, c in zip(missing, cs)]
            verdicts = scorer.score([c.text for _, _, c in flat], [r for r, _, _ in flat])
            rows += [_sample_row(run, r, s, c, v) for (r, s, c), v in zip(flat, verdicts)]
        rows.sort(key=lambda row: (row["problem_id"], row["sample"]))
        log.append(rows)
        generated += len(rows)
        done += len(rows)
        if progress:
            progress(run.name, done, total)
    return generated


def summarise_benchmark(run: BenchmarkRun, records: list[dict], rows: list[dict], scorer: Scorer, cfg: EvalConfig) -> dict:
    ids = [r["extra_info"]["index"] for r in records]
    wanted = set(ids)  # a run with a smaller limit than an earlier one summarises only its own problems
    problems = by_problem([row for row in rows if row["problem_id"] in wanted])
    ordered = {pid: problems.get(pid, []) for pid in ids}
    answers = [[row["answer"] for row in ordered[pid] if row["answer"] is not None] for pid in ids]
    classes = dict(zip(ids, scorer.answer_classes(answers, records)))
    return benchmark_summary(
        run.name, run.ability, run.k, ordered, classes, dist_n=cfg.dist_n, resamples=cfg.bootstrap_resamples, seed=cfg.seed
    )


def run_eval(
    cfg: EvalConfig, *, engine=None, restart: bool = False, progress: Optional[Progress] = None,
    notice: Callable[[str], None] = lambda message: None,
) -> dict:
    """Evaluate cfg.model on cfg.benchmarks; writes results, summary and report; returns the summary.

    ``engine``: a rollout engine to use instead of loading cfg.model (the trainer passes its own).
    """
    from lad.evaluation.report import write_report

    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output {out} exists and is not a folder")
    runs = [resolve(b, cfg) for b in cfg.benchmarks]
    # read every benchmark before loading a model: a bad file fails in seconds, not after a load
    data = {run.name: load_records(run, cfg) for run in runs}
    scorers: dict[str, Scorer] = {}
    benchmarks, stats = {}, {}
    try:
        for run in runs:
            path = out / "samples" / f"{run.name}.jsonl"
            if restart:
                discard(path)
            with SampleLog(path, run_settings(run, cfg)) as log:
                if log.dropped_torn_line:
                    notice(f"{path}: dropped a torn last line (an interrupted write); its samples are redone")
                reused = len(log.rows)
                if run.scorer not in scorers:
                    scorers[run.scorer] = SCORERS[run.scorer](cfg)
                scorer = scorers[run.scorer]
                if _todo(data[run.name], run.k, log.done()) and engine is None:
                    engine = _build_engine(cfg)
                generated = evaluate_benchmark(run, data[run.name], log, engine, scorer, cfg, progress)
                stats[run.name] = {"reused_samples": reused, "generated_samples": generated}
                benchmarks[run.name] = summarise_benchmark(run, data[run.name], log.rows, scorer, cfg)
    finally:
        for scorer in scorers.values():
            scorer.close()
    summary = {
        "label": _label(cfg),
        "model": cfg.model,
        "engine": cfg.engine,
        "benchmarks": benchmarks,
        "aggregate": aggregate(benchmarks),
        "settings": {run.name: run.model_dump(include={"k", "limit", "sampling", "source"}) for run in runs},
        "run": stats,
    }
    write_atomic(out / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False))
    write_report(summary, out)
    return summary


def load_summary(path: str | Path) -> dict:
    """A summary.json (or the folder holding one); errors name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (expected the summary.json of an evaluation)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
    missing = [key for key in ("label", "model", "benchmarks", "aggregate") if key not in summary]
    if missing:
        raise ValueError(f"{path}: not an evaluation summary (missing {missing})")
    return summary
