"""What each pipeline component does, as plain functions over local paths.

A KFP component hands its inputs' local paths and its parameters to one function here and
records what it returns; the function builds the stage's typed config and calls the library
(data prep, SFT, RL, evaluation, sandbox, registry). Keeping the work here, not in the component
bodies, lets the same code run in a cluster pod, in KFP's local runner and in plain tests.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from pydantic import ValidationError

from lad.config import format_validation
from lad.local_server import stop_process_group
from lad.pipeline.console import figure, progress
from lad.tracking.registry import GATE

TRAIN_FILE = "train.parquet"
EVAL_FILE = "eval.parquet"
SUMMARY_FILE = "summary.json"
PROGRAMS_FILE = "programs.jsonl"


class StepError(RuntimeError):
    """A step's input or parameter is unusable; the message names it and what was expected."""


def _move_into(src: Path, dest: Path) -> None:
    """Put a finished folder at ``dest`` (same filesystem: a rename, so never half there)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(str(src), str(dest))


def _workdir(dest: Path) -> tempfile.TemporaryDirectory:
    """Scratch space next to ``dest`` so the final move is a rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent)


@contextmanager
def pipeline_step(experiment: str, run_id: str, run_name: str, step: str) -> Iterator[str]:
    """A component's body as step ``step`` of pipeline run ``run_id`` (the KFP run's id): yields
    the id of that pipeline run's MLflow run in ``experiment`` (named ``run_name``, created by the
    first step that asks), under which the step nests its stage. A failure, an interrupt or
    SIGTERM inside the block marks it FAILED or KILLED (:meth:`lad.tracking.Tracker.pipeline_step`).
    Empty ``run_id``: yields "" (a step called outside a pipeline logs a run of its own)."""
    if not run_id:
        yield ""
        return
    from lad.tracking import Tracker, TrackingConfig

    tracker = Tracker(TrackingConfig(experiment=experiment))
    parent = tracker.pipeline_run(run_id, run_name or run_id)
    with tracker.pipeline_step(parent, step):
        yield parent


# --------------------------------------------------------------------------------------------
# data prep
# --------------------------------------------------------------------------------------------


def prep(datasets: list[dict], output: str | Path, *, extra_train_uri: str = "", seed: int = 0, experiment: str = "lad-pipeline",
         parent_run_id: str = "") -> dict:
    """Data prep of ``datasets`` (data prep source entries, see lad/data/config.py) into
    ``output`` (train.parquet, eval.parquet, report.json, manifest). ``extra_train_uri``: one
    more training source read with the generic adapter (the retraining job's new data). Under
    ``parent_run_id`` the MLflow stage ``data_prep`` gets the config, the row counts (totals and
    per output file), each output's sha256 and the report."""
    from lad.data.config import PrepConfig
    from lad.data.prep import PrepError, run_prep

    sources = [dict(s) for s in datasets]
    if extra_train_uri:
        sources.append({"name": "new-data", "role": "train", "uri": extra_train_uri, "adapter": "generic"})
    try:
        cfg = PrepConfig(sources=sources, output=str(output), eval_layout="single", seed=seed)
    except ValidationError as err:
        raise StepError(f"parameter datasets: {format_validation(err)}") from None
    if not any(s.role == "train" for s in cfg.sources):
        raise StepError("parameter datasets: needs at least one source with role: train (the RL prompts)")
    try:
        report = run_prep(cfg, progress=lambda name, n: print(f"data prep: {name}: {n} rows", flush=True) if n % 500 == 0 else None)
    except PrepError as err:
        raise StepError(f"data prep: {err}") from None
    if parent_run_id:
        from lad.data.prep import REPORT
        from lad.storage import content_hash
        from lad.tracking import Tracker, TrackingConfig

        with Tracker(TrackingConfig(experiment=experiment)).stage("data_prep", config=cfg, parent_run_id=parent_run_id) as run:
            run.log_metrics({**{f"rows/{k}": v for k, v in report["totals"].items()},
                             **{f"rows/{name}": n for name, n in report["outputs"].items()}}, 0)
            run.set_tags({f"sha256.{name}": content_hash(Path(output) / name) for name in report["outputs"]})
            run.log_artifact(Path(output) / REPORT, "data_prep")
    figure(", ".join(f"{rows} {name.removesuffix('.parquet')} rows" for name, rows in report["outputs"].items()))
    return report


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def materialize_model(ref: str, dest: str | Path, *, seed: int = 0, card: Optional[dict] = None) -> None:
    """Write the model ``ref`` (any reference ``lad.modeling.load_model`` takes) as a Hugging
    Face folder at ``dest``: the starting point when a step has nothing to train from."""
    from lad.modeling import load_model, save_model

    try:
        model, tokenizer = load_model(ref, seed=seed)
    except (OSError, ValueError) as err:
        raise StepError(f"parameter base_model {ref!r}: cannot load it: {err}") from None
    save_model(model, tokenizer, Path(dest), card or {"base_model": ref})


def sft(
    base_model: str, model_out: str | Path, *, steps: int, data: Optional[str] = None, problems: int = 0,
    experiment: str = "lad-pipeline", parent_run_id: str = "", **parameters,
) -> dict:
    """SFT warm-up of ``base_model`` for ``steps`` optimizer steps into ``model_out``.

    ``steps == 0`` skips training: ``model_out`` is the base model itself, so the RL step always
    starts from this step's output. ``data``: ``synthetic:<task>,...`` (the generators'
    demonstrations of ``problems`` distinct problems per task, repeated over the steps; 0: as many
    as the steps consume) or a parquet/JSONL of records with responses (local or s3://); None:
    SFTConfig's synthetic tasks. ``parameters`` (SFT_PARAMETERS: lr, micro_batch_size, ...) that
    are set replace SFTConfig's defaults. ``parent_run_id`` (what :func:`pipeline_step` yields):
    the MLflow run to nest the stage ``sft`` under.
    """
    from lad.pipeline.settings import SFT_PARAMETERS, SettingsError, chosen, layered, typed_defaults
    from lad.train.sft import SFTConfig, train_sft

    dest = Path(model_out)
    if steps < 0:
        raise StepError(f"parameter sft_steps: expected >= 0 (0 skips the warm-up), got {steps}")
    if problems < 0:
        raise StepError(f"parameter sft_problems: expected >= 0 (0: steps x batch size), got {problems}")
    try:
        knobs = chosen(parameters, SFT_PARAMETERS, "sft")
    except SettingsError as err:
        raise StepError(f"SFT settings: {err}") from None
    settings = {**typed_defaults("sft"), **knobs}
    if steps == 0:
        materialize_model(base_model, dest, seed=settings["train.seed"], card={"base_model": base_model, "sft": "skipped"})
        return {"sft/steps": 0}
    data = data or "synthetic:" + ",".join(settings["data.synthetic.tasks"])
    if data.startswith("synthetic:"):
        tasks = [t.strip() for t in data[len("synthetic:"):].split(",") if t.strip()]
        n = problems or max(64, steps * settings["train.micro_batch_size"])
        source = {"data.synthetic": {"tasks": tasks, "n_per_task": n, "seed": settings["train.seed"]}}
        heldout_tasks = tasks
    else:
        source = {"data.path": data}
        heldout_tasks = []
    with _workdir(dest) as work:
        raw = layered(knobs, source, {
            "model": base_model, "output_dir": work, "train.max_steps": steps, "train.log_every": max(1, steps // 100),
            "optim.warmup_steps": min(20, steps // 10),
            "checkpoint.every_steps": max(steps, 1),
            "heldout.tasks": heldout_tasks if settings["heldout.n_per_task"] else [], "heldout.max_new_tokens": 64,
            "tracking": {"experiment": experiment, "run_name": "sft", "parent_run_id": parent_run_id or None},
        })
        try:
            cfg = SFTConfig.model_validate(raw)
        except ValidationError as err:
            raise StepError(f"SFT settings: {format_validation(err)}") from None
        results = train_sft(cfg, on_step=lambda step: progress(step, steps))
        _move_into(Path(work) / "model", dest)
    accuracy = [f"held-out {k.split('/')[1]} accuracy {v:.2f}" for k, v in results.items()
                if k.startswith("heldout/") and k.endswith("/accuracy") and k != "heldout/all/accuracy"]
    figure(", ".join([f"loss {results['train/final_loss']:.3f}", *accuracy]))
    return results


def rl_config(
    init_model: str, train_path: str, eval_path: Optional[str], output_dir: str, *, preset: str = "",
    overrides: Optional[dict] = None, eval_prompts: int = 0, sandbox_url: str = "", experiment: str = "lad-pipeline",
    parent_run_id: str = "", stage: str = "train", checkpoint_uri: str = "", **parameters,
):
    """The RL stage's config (see :mod:`lad.pipeline.settings` for the layers): RLConfig's
    defaults, the ``preset``, the run's ``parameters`` that are set (RL_PARAMETERS: objective,
    lr, steps, ...), the ``overrides`` (any RLConfig setting by its dotted name), then this step's
    own: the model, data prep's train.parquet and, with ``eval_prompts`` > 0, that many of its
    eval rows scored before and after (0: none, as RLData has by default); under
    ``parent_run_id`` its MLflow run is the stage ``stage``. With ``checkpoint_uri`` (see
    :func:`checkpoint_prefix`) every ``checkpoint.every_steps`` steps' checkpoint is published
    there; without it the step keeps none (its output folder is scratch)."""
    from lad.pipeline.settings import LAD_ONLY, RL_PARAMETERS, SettingsError, check_field, chosen, flatten, layered, read_preset
    from lad.train.rl import RLConfig

    overrides = dict(overrides or {})
    try:
        given = flatten(read_preset(preset)) if preset else {}
        for key in overrides:
            check_field(RLConfig, key)
        knobs = chosen(parameters, RL_PARAMETERS, "rl")
    except SettingsError as err:
        raise StepError(f"RL settings: {err}") from None
    merged = flatten(layered(given, knobs, overrides))
    objective = merged.get("algorithm.objective", "lad")
    if objective != "lad":
        knobs = {k: v for k, v in knobs.items() if k not in {RL_PARAMETERS[p] for p in LAD_ONLY}}
    if objective != given.get("algorithm.objective", "lad"):
        # a preset's loss settings and advantage estimator are its own objective's (LAD's divergence
        # would be refused by GRPO's settings, and GRPO's std-normalised advantage is not Dr. GRPO's)
        given = {k: v for k, v in given.items() if not k.startswith(("algorithm.loss_params", "algorithm.advantage"))}
    steps = merged.get("train.max_steps", RLConfig.model_fields["train"].default.max_steps)
    own = {
        "model": str(init_model), "output_dir": str(output_dir),
        "data.train": {"path": train_path},
        "data.eval": {"path": eval_path, "limit": eval_prompts} if eval_path and eval_prompts > 0 else None,
        "tracking": {"experiment": experiment, "run_name": stage if parent_run_id else f"{objective}-{stage}",
                     "parent_run_id": parent_run_id or None},
        **({"reward.sandbox_url": sandbox_url} if sandbox_url else {}),
        # the output folder is scratch of which only the model is kept: no rollout samples, and checkpoints only
        # where they outlive the pod
        "train.samples_every": 0,
        **({"checkpoint.remote": checkpoint_uri} if checkpoint_uri else {"checkpoint.every_steps": max(steps, 1)}),
    }
    # ~100 points per curve: a metric write per step to a sqlite store costs more than a tiny model's step
    raw = layered({"train.log_every": max(1, steps // 100)}, given, knobs, overrides, own)
    try:
        return RLConfig.model_validate(raw)
    except ValidationError as err:
        raise StepError(f"RL settings: {format_validation(err)}") from None


CHECKPOINTS_PREFIX = "lad-checkpoints"


def checkpoint_prefix(artifact_uri: str, run_id: str, task: str) -> str:
    """Where training task ``task`` of pipeline run ``run_id`` publishes its checkpoints:
    ``s3://<bucket of the artifact store>/lad-checkpoints/<run id>/<task>``, the same for every
    attempt of the task, so a retry finds what the attempt before it published. "" (no remote
    checkpoints) outside a pipeline run or where the artifacts are local files (the local runner)."""
    for scheme in ("s3://", "minio://"):
        if run_id and artifact_uri.startswith(scheme):
            bucket = artifact_uri[len(scheme):].split("/", 1)[0]
            return f"s3://{bucket}/{CHECKPOINTS_PREFIX}/{run_id}/{task}"
    return ""


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _torchrun(cfg, processes: int, work: Path) -> dict:
    """``cfg`` trained by ``processes`` processes of this machine, one per GPU: torchrun running
    the pipeline's worker, in a session of its own that is ended with the step (a failure, a
    SIGTERM), so no process outlives it; their output goes to this step's log."""
    config = work / "rl_config.json"
    config.write_text(cfg.model_dump_json())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", "lad.pipeline.worker", "--config", str(config)]
    print(f"training with {processes} processes: {' '.join(cmd[1:])}", flush=True)
    # SIGTERM must reach the cleanup below: where no handler turns it into an exception (a step
    # outside a pipeline run), one does for the wait, and the step ends with status 143.
    own = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if own else None
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        code = proc.wait()
    finally:
        stop_process_group(proc, grace_s=30)
        if own:
            signal.signal(signal.SIGTERM, previous)
    if code != 0:
        raise StepError(f"training: torchrun with {processes} processes exited with status {code} (its processes' errors are above)")
    return json.loads((work / "metrics.json").read_text())


def train(init_model: str | Path, data_dir: str | Path, model_out: str | Path, *, processes: int = 1, **settings) -> dict:
    """RL (see :func:`rl_config` for the settings) from ``init_model`` on data prep's
    train.parquet into ``model_out``; returns the trainer's final metrics. With
    ``checkpoint_uri`` the run resumes from the newest checkpoint published there (a retried or
    pre-empted step goes on where its last attempt's checkpoint stands). ``processes`` > 1:
    data-parallel over that many processes of this machine (one per GPU of the pod; gloo on CPU),
    launched by torchrun."""
    from lad.train.rl import train_rl

    if processes < 1:
        raise StepError(f"parameter gpus_per_node: expected >= 1, got {processes}")
    data_dir, dest = Path(data_dir), Path(model_out)
    if not (data_dir / TRAIN_FILE).is_file():
        raise StepError(f"input data: {data_dir} has no {TRAIN_FILE} (is it the output of data prep?)")
    eval_path = str(data_dir / EVAL_FILE) if (data_dir / EVAL_FILE).is_file() else None
    with _workdir(dest) as work:
        cfg = rl_config(str(init_model), str(data_dir / TRAIN_FILE), eval_path, work, **settings)
        if processes > 1:
            if cfg.engine.name != "deepspeed":
                raise StepError(f"parameter train_engine: {cfg.engine.name!r} trains in one process; "
                                f"{processes} processes (gpus_per_node) need 'deepspeed'")
            results = _torchrun(cfg, processes, Path(work))
        else:
            results = train_rl(cfg, resume=cfg.checkpoint.remote is not None,
                               on_step=lambda step: progress(step, cfg.train.max_steps))
        last = json.loads((Path(work) / "steps.jsonl").read_text().splitlines()[-1])
        _move_into(Path(work) / "model", dest)
    figure(f"step {last['step']}: reward {last['reward/mean']:.3f}, accuracy {last['reward/accuracy']:.2f}")
    return results


# --------------------------------------------------------------------------------------------
# evaluation and code execution
# --------------------------------------------------------------------------------------------


def parse_benchmarks(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise StepError("parameter eval_benchmarks: expected comma-separated benchmark names (lad eval list)")
    return names


def evaluate(
    model_dir: str | Path, output: str | Path, *, benchmarks: str, sandbox_url: str = "", benchmarks_dir: str = "",
    label: str = "model", seed: int = 0, experiment: str = "lad-pipeline", parent_run_id: str = "", stage: str = "evaluate",
    **parameters,
) -> dict:
    """Evaluate the model folder on the named benchmarks into ``output`` (samples/, summary.json,
    report.md/.html); returns the summary. ``parameters`` (EVAL_PARAMETERS: k, limit,
    max_new_tokens, temperature) that are set replace each benchmark's registered values (0: keep them; a
    temperature below 0 keeps it, 0 decodes greedily).

    Under ``parent_run_id`` the MLflow stage ``stage`` gets the config, the summary's numbers
    (:func:`registry_metrics`) and the summary and reports as artifacts."""
    from lad.config import ConfigError
    from lad.evaluation.benchmarks import BenchmarkError
    from lad.evaluation.results import ResultsError
    from lad.rewards.code import ScoringError
    from lad.evaluation.config import EvalConfig
    from lad.evaluation.stage import run_eval

    from lad.pipeline.settings import EVAL_PARAMETERS, SettingsError, chosen

    try:
        per = chosen(parameters, EVAL_PARAMETERS, "eval")
    except SettingsError as err:
        raise StepError(f"evaluation settings: {err}") from None
    try:
        cfg = EvalConfig(
            model=str(model_dir), output=str(output), label=label, seed=seed, benchmarks_dir=benchmarks_dir or None,
            sandbox_url=sandbox_url or None, benchmarks=[{"name": n, **per} for n in parse_benchmarks(benchmarks)],
        )
    except ValidationError as err:
        raise StepError(f"evaluation settings: {format_validation(err)}") from None
    try:
        summary = run_eval(cfg, progress=lambda name, done, total: progress(done, total))
    except (BenchmarkError, ConfigError, ResultsError, ScoringError) as err:
        # The evaluator's own errors already name the benchmark, file or setting at fault.
        raise StepError(f"evaluation: {err}") from None
    if parent_run_id:
        from lad.tracking import Tracker, TrackingConfig

        from lad.evaluation.benchmarks import load_records, resolve

        with Tracker(TrackingConfig(experiment=experiment)).stage(stage, config=cfg, parent_run_id=parent_run_id) as run:
            run.log_metrics(registry_metrics(summary)[0], 0)
            for over in cfg.benchmarks:  # the problems as evaluated: the benchmark's records, cut to its limit
                bench = resolve(over, cfg)
                run.log_records(load_records(bench, cfg), name=bench.name, context="eval", source=bench.source)
            for name in (SUMMARY_FILE, "report.md", "report.html"):
                run.log_artifact(Path(output) / name, "evaluation")
    figure(", ".join(f"{name} Avg@{b['k']} {100 * b['avg@' + str(b['k'])]:.1f}%" for name, b in summary["benchmarks"].items()))
    return summary


def registry_metrics(summary: dict) -> tuple[dict[str, float], list[str]]:
    """The numbers a model version is registered with, and its benchmark tags.

    Metrics: every numeric aggregate as ``<group>/<metric>`` (``all/avg@k`` is the default
    promotion metric) and each benchmark's avg@k, pass@1 and pass@k. The benchmark tags carry
    k and the problem count, so the gate only compares versions scored the same way.
    """
    metrics: dict[str, float] = {}
    for group, values in summary["aggregate"].items():
        for key, value in values.items():
            if isinstance(value, (int, float)):
                metrics[f"{group}/{key}"] = float(value)
    tags = []
    for name, b in summary["benchmarks"].items():
        k = b["k"]
        for key, alias in ((f"avg@{k}", "avg@k"), ("pass@1", "pass@1"), (f"pass@{k}", "pass@k")):
            metrics[f"{name}/{alias}"] = float(b[key])
        tags.append(f"{name}:k={k}:n={b['problems']}")
    return metrics, sorted(tags)


def code_benchmarks(benchmarks: str) -> list[str]:
    """The code benchmarks among ``benchmarks`` (the ones whose answers the sandbox runs)."""
    from lad.evaluation.benchmarks import BENCHMARKS

    return [n for n in parse_benchmarks(benchmarks) if n in BENCHMARKS and BENCHMARKS[n].ability == "code"]


def code_programs(eval_dir: str | Path, benchmarks: str, *, k: int = 0, limit: int = 0,
                  benchmarks_dir: str = "") -> tuple[list[dict], int]:
    """The evaluation's code answers as a programs table for the sandbox: one row per sample
    with an extracted program, ``{id, code, tests}``, the code completed with the problem's
    starter code exactly as the evaluation scored it. Returns (rows, samples left out because
    their tests need reference outputs, which only the evaluation computes)."""
    from lad.evaluation.benchmarks import load_records, resolve
    from lad.evaluation.config import BenchmarkOverrides, EvalConfig
    from lad.pipeline.settings import EVAL_PARAMETERS, chosen
    from lad.rewards.code import assemble_program, method_shim, record_tests

    rows, skipped = [], 0
    for name in code_benchmarks(benchmarks):
        over = BenchmarkOverrides(name=name, **chosen({"k": k, "limit": limit}, EVAL_PARAMETERS, "eval"))
        cfg = EvalConfig(model=str(eval_dir), benchmarks=[over], benchmarks_dir=benchmarks_dir or None)
        records = {r["extra_info"]["index"]: r for r in load_records(resolve(over, cfg), cfg)}
        path = Path(eval_dir) / "samples" / f"{name}.jsonl"
        if not path.is_file():
            raise StepError(f"input evaluation: {path} is missing (was {name} evaluated?)")
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            if sample["reason"] == "no_code" or not sample["answer"]:
                continue
            record = records[sample["problem_id"]]
            if record["extra_info"].get("test_type") == "reference":
                skipped += 1
                continue
            code, tests = method_shim(assemble_program(sample["answer"], record["extra_info"]), record_tests(record))
            rows.append({"id": f"{name}/{sample['problem_id']}/{sample['sample']}", "code": code, "tests": tests})
    return rows, skipped


def execute_programs(rows: list[dict], *, sandbox_url: str = "", timeout_s: float = 10.0) -> tuple[list[dict], dict]:
    """Run each program of the table against its tests in the sandbox; per-test verdict rows and
    totals (programs, programs passing every test, tests, tests passed)."""
    from lad.sandbox.client import SandboxClient

    for i, row in enumerate(rows):
        missing = [key for key in ("id", "code", "tests") if key not in row]
        if missing:
            raise StepError(f"input programs, row {i + 1}: missing {missing}; expected id, code and tests")
    with SandboxClient(sandbox_url or None) as client:
        if client.url is None:
            results = [client.evaluate(r["code"], r["tests"], timeout_s=timeout_s) for r in rows]
        else:
            results = client.evaluate_many([(r["code"], r["tests"]) for r in rows], timeout_s=timeout_s)
    verdicts, totals = [], {"programs": len(rows), "programs_passed": 0, "tests": 0, "tests_passed": 0}
    for row, result in zip(rows, results):
        passed = result.status == "ok" and result.passed == result.total
        totals["programs_passed"] += int(passed)
        totals["tests"] += result.total
        totals["tests_passed"] += result.passed
        for i, v in enumerate(result.verdicts):
            verdicts.append({"id": row["id"], "test": i, "status": v.status, "program_status": result.status})
    figure(f"{totals['programs_passed']} of {totals['programs']} programs pass all their tests "
           f"({totals['tests_passed']} of {totals['tests']} tests)")
    return verdicts, totals


def code_execution(eval_dir: str | Path, benchmarks: str, *, k: int = 0, limit: int = 0, benchmarks_dir: str = "",
                   sandbox_url: str = "", timeout_s: float = 10.0, experiment: str = "lad-pipeline",
                   parent_run_id: str = "") -> tuple[list[dict], dict]:
    """The evaluation's code answers run against their tests in the sandbox (:func:`code_programs`,
    :func:`execute_programs`): per-test verdict rows and totals, with ``reference_samples_left_out``;
    a run that evaluated no code benchmark is skipped, and says so. Under ``parent_run_id`` the
    MLflow stage ``code_execution`` gets the settings, the totals and the verdicts (or the reason
    it was skipped)."""
    skipped_because = "" if code_benchmarks(benchmarks) else f"no code benchmark among the evaluated ({benchmarks})"
    if skipped_because:
        figure(f"skipped: {skipped_because}")
        verdicts, totals = [], {"programs": 0, "programs_passed": 0, "tests": 0, "tests_passed": 0}
        left_out = 0
    else:
        rows, left_out = code_programs(eval_dir, benchmarks, k=k, limit=limit, benchmarks_dir=benchmarks_dir)
        verdicts, totals = execute_programs(rows, sandbox_url=sandbox_url, timeout_s=timeout_s)
    totals = {**totals, "reference_samples_left_out": left_out}
    if parent_run_id:
        from lad.tracking import Tracker, TrackingConfig

        settings = {"benchmarks": benchmarks, "k": k, "limit": limit, "timeout_s": timeout_s, "sandbox_url": sandbox_url or "in-process"}
        with Tracker(TrackingConfig(experiment=experiment)).stage("code_execution", config=settings, parent_run_id=parent_run_id) as run:
            if skipped_because:
                run.set_tags({"skipped": skipped_because})
            run.log_metrics(totals, 0)
            run.log_text("".join(json.dumps(v) + "\n" for v in verdicts), "code_execution/verdicts.jsonl")
    return verdicts, totals


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


COMPARISON_DIR = "comparison"  # the comparison report's folder among the pipeline run's artifacts


def compare(evaluations: list[tuple[str, str | Path]], output: str | Path, *, experiment: str = "lad-pipeline",
            parent_run_id: str = "") -> dict:
    """The evaluations ``(label, folder holding summary.json)`` side by side in ``output``:
    compare.md/.html/.json and one Pass@k plot with every run's curve; returns compare.json's data.

    Under ``parent_run_id`` (the pipeline run's MLflow run) the report goes among that run's
    artifacts (``comparison/``, the HTML with its figure inside) and its headline numbers
    (:func:`headline_metrics`) among its metrics, and the MLflow stage ``compare`` records them too."""
    from lad.evaluation.report import comparison, write_comparison

    runs = []
    for label, folder in evaluations:
        path = Path(folder) / SUMMARY_FILE
        if not path.is_file():
            raise StepError(f"input evaluation {label!r}: {path} is missing (is it the output of evaluate?)")
        runs.append((label, json.loads(path.read_text())))
    try:
        write_comparison(runs, Path(output))
    except ValueError as err:
        raise StepError(f"comparison: {err}") from None
    data = comparison(runs)
    if parent_run_id:
        from lad.tracking import RunContext, Tracker, TrackingConfig

        tracker = Tracker(TrackingConfig(experiment=experiment))
        headline = headline_metrics(data)
        settings = {"runs": [label for label, _ in runs], "models": {label: s["model"] for label, s in runs}}
        with tracker.stage("compare", config=settings, parent_run_id=parent_run_id) as run:
            run.log_metrics(headline, 0)
        parent = RunContext(tracker, parent_run_id)
        parent.log_metrics(headline, 0)
        for name in ("compare.html", "compare.md", "compare.json", "plots"):
            parent.log_artifact(Path(output) / name, f"{COMPARISON_DIR}/plots" if name == "plots" else COMPARISON_DIR)
    figure("mean Avg@k " + ", ".join(f"{label} {100 * data['mean'][label]['avg@k']:.1f}%" for label, _ in runs))
    return data


def headline_metrics(compared: dict) -> dict[str, float]:
    """The numbers a pipeline run is read by, from a comparison (:func:`lad.evaluation.report.comparison`),
    as fractions like every evaluation metric: per model (its label, spaces as ``_``) and benchmark
    ``<model>/<benchmark>/avg@k`` with ``avg@k_ci95_low``/``_high`` and ``pass@k``, its mean
    ``<model>/all/avg@k``, and for each model after the first (the warm start, or the champion)
    ``gain/<model>/<benchmark>/avg@k``, its Avg@k minus the first's."""
    first = compared["runs"][0]
    out: dict[str, float] = {}
    for label in compared["runs"]:
        slug = label.replace(" ", "_")
        for bench, per_run in compared["benchmarks"].items():
            if label not in per_run:
                continue
            v = per_run[label]
            out[f"{slug}/{bench}/avg@k"] = v["avg@k"]
            out[f"{slug}/{bench}/avg@k_ci95_low"], out[f"{slug}/{bench}/avg@k_ci95_high"] = v["avg@k_ci95"]
            out[f"{slug}/{bench}/pass@k"] = v["pass@k"]
            if label != first and first in per_run:
                out[f"gain/{slug}/{bench}/avg@k"] = v["avg@k"] - per_run[first]["avg@k"]
        out[f"{slug}/all/avg@k"] = compared["mean"][label]["avg@k"]
    return out


def baseline_tags(summary: dict, baseline: dict, prefix: str = "warm_start") -> dict[str, str]:
    """Registry tags that put a model version's numbers beside those of the model it is measured
    against (its starting point, ``warm_start``, or the champion): for each benchmark's avg@k and
    pass@k and the mean avg@k, ``<prefix>.<metric>`` and ``gain.<metric>`` (this version minus
    that one), in the registry's metric units."""
    from lad.tracking import metric_key

    ours, theirs = registry_metrics(summary)[0], registry_metrics(baseline)[0]
    tags = {}
    for key in sorted(ours):
        if key in theirs and (key == "all/avg@k" or key.endswith(("/avg@k", "/pass@k"))):
            tags[f"{prefix}.{metric_key(key)}"] = repr(theirs[key])
            tags[f"gain.{metric_key(key)}"] = repr(ours[key] - theirs[key])
    return tags


def chat_settings(summary: dict, metric: str, name: str):
    """How the registered chat model answers a request that sets nothing: as the evaluation sampled
    the benchmark the promotion metric names (the first benchmark for an aggregate such as
    all/avg@k), with the evaluation's rollout engine (hf where that was vllm, which needs a GPU)."""
    from lad.tracking.chat_model import ChatSettings

    settings = summary.get("settings") or {}
    benchmark = metric.split("/", 1)[0] if metric.split("/", 1)[0] in settings else next(iter(settings), None)
    sampling = settings[benchmark]["sampling"] if benchmark else {}
    engine = summary.get("engine") if summary.get("engine") in ("hf", "native") else "hf"
    return ChatSettings(model_name=name, engine=engine, **{k: sampling[k] for k in ("temperature", "top_p", "max_new_tokens", "stop")
                                                          if k in sampling})


def register(
    model_dir: str | Path, summary: dict, *, name: str, metric: str = GATE.metric, margin: float = GATE.margin,
    min_score: float = GATE.min_score, champion_summary: Optional[dict] = None, baseline_summary: Optional[dict] = None,
    data_dir: str | Path | None = None, base_model: str = "", experiment: str = "lad-pipeline", registration_key: str = "", parent_run_id: str = "",
) -> dict:
    """Log the model to MLflow as a chat model answering as it was evaluated (:func:`chat_settings`),
    register it as a version of ``name`` (alias challenger) with its evaluation, and run the promotion gate: ``champion`` moves to it only when it reaches
    ``min_score`` on ``metric`` and beats the current champion by ``margin`` over the same
    benchmarks (:func:`lad.tracking.decide_promotion`).

    ``champion_summary``: the current champion re-evaluated in this run: the gate compares two
    evaluations made the same way now, and the new version is tagged with the champion's numbers
    and the gain (:func:`baseline_tags`, prefix ``champion``); the champion's own tags stay as
    they are. ``baseline_summary``: the model's starting point (the SFT warm start) evaluated the
    same way, tagged the same way (prefix ``warm_start``). At most one of the two: the gain is over one.
    ``registration_key`` (the pipeline run's id): a retried step gets the version it registered
    before instead of a second one. ``parent_run_id``: the model is logged by the stage
    ``register`` of that MLflow run, which ends with it (the last stage); else by a run of its own.
    """
    from lad.storage import content_hash
    from lad.tracking import (
        CHAMPION, TAG_REASON, TAG_STAGE, PromotionResult, Tracker, TrackingConfig, TrackingError, VersionScore, metric_key,
    )

    if champion_summary is not None and baseline_summary is not None:
        raise StepError("inputs champion_evaluation and baseline_evaluation: give at most one (the version's gain is over one of them)")
    metrics, benchmarks = registry_metrics(summary)
    if metric_key(metric) not in {metric_key(m) for m in metrics}:
        raise StepError(f"parameter promotion_metric {metric!r}: not among the evaluation's metrics {sorted(metrics)}")
    for parameter, value in (("promotion_margin", margin), ("promotion_min_score", min_score)):
        if value < 0:
            raise StepError(f"parameter {parameter}: expected >= 0, got {value}")
    if not (Path(model_dir) / "config.json").is_file():
        raise StepError(f"input model: {model_dir} is not a Hugging Face model folder (no config.json)")
    tracker = Tracker(TrackingConfig(experiment=experiment))
    data_hash = content_hash(str(data_dir)) if data_dir else None
    try:
        settings = {"name": name, "metric": metric, "margin": margin, "min_score": min_score, "base_model": base_model}
        with (tracker.stage("register", config=settings, parent_run_id=parent_run_id) if parent_run_id
              else tracker.run(f"register-{name}", tags={TAG_STAGE: "register"})) as run:
            # The checkpoint folder as it is: the weights are copied, never loaded (memory does not grow with the model).
            uri = run.log_model(str(model_dir), chat=chat_settings(summary, metric, name), metadata={"benchmarks": benchmarks})
            run.log_metrics(metrics, 0, model_id=uri.removeprefix("models:/"))
            run.log_dict(summary, "evaluation/summary.json")
        mv = tracker.register_model(name, uri, metrics=metrics, benchmarks=benchmarks, data_hash=data_hash, base_model=base_model or None,
                                 idempotency_key=f"{registration_key}/{name}" if registration_key else None)
        champion = tracker.champion(name)
        if CHAMPION in mv.aliases:  # a retried step whose version was promoted: the decision stands
            result = PromotionResult(True, mv.tags[TAG_REASON], str(mv.version), str(mv.version))
        else:
            compared, champion_score = {}, None
            if baseline_summary is not None:
                compared = baseline_tags(summary, baseline_summary)
            elif champion_summary is not None and champion is not None:
                compared = baseline_tags(summary, champion_summary, prefix="champion")
                champ_metrics, champ_benchmarks = registry_metrics(champion_summary)
                champion_score = VersionScore(str(champion.version), {metric_key(k): v for k, v in champ_metrics.items()},
                                              ",".join(champ_benchmarks))
            for key, value in compared.items():
                tracker.client.set_model_version_tag(name, mv.version, key, value)
            result = tracker.promote(name, mv.version, metric, margin, min_score=min_score, champion_score=champion_score)
        out = {
            "name": name, "version": str(mv.version), "promoted": result.promoted, "reason": result.reason,
            "champion": result.champion, "model_uri": f"models:/{name}/{mv.version}", "tracking_uri": tracker.tracking_uri,
            "metric": metric, "value": metrics[next(m for m in metrics if metric_key(m) == metric_key(metric))],
        }
        before = None if champion is None or str(champion.version) == str(mv.version) else champion
        if before is not None or not mv.description:  # a retry after the promotion keeps the description written then
            baseline = (("warm start", baseline_summary) if baseline_summary is not None else
                        (f"champion v{before.version}", champion_summary) if champion_summary is not None and before else None)
            _describe_version_and_run(tracker, out, summary, parent_run_id or run.run_id, bool(parent_run_id), baseline=baseline,
                                      compared=_compared(before, champion_summary, metric), margin=margin, min_score=min_score,
                                      base_model=base_model, data_hash=data_hash)
        if parent_run_id:
            tracker.client.set_terminated(parent_run_id)
    except TrackingError as err:
        raise StepError(f"registry: {err}") from None
    figure(f"{name} v{mv.version}: {'promoted to champion' if result.promoted else 'not promoted'} ({result.reason})")
    return out


def _compared(champion, champion_summary: Optional[dict], metric: str) -> Optional[tuple[str, float]]:
    """What the gate compared the new version with: the champion's number on ``metric`` from its
    evaluation in this run, else from its version's tags; None without a champion."""
    from lad.tracking import metric_key, version_score

    if champion is None:
        return None
    held = ({metric_key(k): v for k, v in registry_metrics(champion_summary)[0].items()} if champion_summary is not None
            else version_score(champion).metrics)
    return (f"champion v{champion.version}", held[metric_key(metric)]) if metric_key(metric) in held else None


def _describe_version_and_run(tracker, result: dict, summary: dict, run_id: str, pipeline: bool, *, baseline, compared,
                              margin: float, min_score: float, base_model: str, data_hash: Optional[str]) -> None:
    """The registered version's description (scores, gate, base model, data, links) on its page, and,
    for a pipeline run (``pipeline``: ``run_id`` is the pipeline run's), the same as that run's
    description with the gate's decision as its tags."""
    from lad.pipeline.reports import model_markdown
    from lad.tracking import TAG_DECISION, TAG_REASON

    name, version = result["name"], result["version"]
    run = f"#/experiments/{tracker.experiment_id}/runs/{run_id}"
    story = dict(baseline=baseline, compared=compared, margin=margin, min_score=min_score, base_model=base_model, data_hash=data_hash)
    links = [("the pipeline run" if pipeline else "the run that registered it", run)]
    if pipeline:
        links.append(("the comparison report", f"{run}/artifacts/{COMPARISON_DIR}/compare.html"))
    tracker.client.update_model_version(name, version, description=model_markdown(result, summary, links=links, **story))
    if pipeline:
        text = model_markdown(result, summary, links=[("the registered version", f"#/models/{name}/versions/{version}"), *links[1:]],
                              **story)
        tags = {TAG_DECISION: "promoted" if result["promoted"] else "refused", TAG_REASON: result["reason"],
                "registered_model.name": name, "registered_model.version": version, "mlflow.note.content": text}
        for key, value in tags.items():
            tracker.client.set_tag(run_id, key, value)


def champion_model(name: str, dest: str | Path, *, fallback: str, seed: int = 0) -> dict:
    """The current champion of ``name`` as a Hugging Face folder at ``dest`` (the retraining
    job's starting point), copied from its logged files without loading the weights; without a
    champion, ``fallback`` (the base model)."""
    from lad.tracking import Tracker, TrackingConfig

    tracker = Tracker(TrackingConfig())
    champion = tracker.champion(name)
    if champion is None:
        materialize_model(fallback, dest, seed=seed, card={"base_model": fallback, "champion": None})
        return {"version": "", "source": fallback}
    import mlflow.artifacts
    from mlflow.models import Model

    from lad.tracking.chat_model import CHECKPOINT

    dest = Path(dest)
    with _workdir(dest) as work:
        logged = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{champion.version}", dst_path=work))
        artifacts = Model.load(logged / "MLmodel").flavors.get("python_function", {}).get("artifacts") or {}
        if CHECKPOINT in artifacts:  # a chat model (lad.tracking.chat_model): the checkpoint folder as logged
            folder = logged / artifacts[CHECKPOINT]["path"]
        else:
            # A version logged before with the transformers flavor: its copy of the checkpoint, and the tokenizer
            # apart (under components/tokenizer) where the model was logged from memory.
            folder = logged / "model"
            tokenizer = logged / "components" / "tokenizer"
            for file in (tokenizer.iterdir() if tokenizer.is_dir() else ()):
                if not (folder / file.name).exists():
                    shutil.copy2(file, folder / file.name)
        _move_into(folder, dest)
    return {"version": str(champion.version), "source": f"models:/{name}/{champion.version}"}
