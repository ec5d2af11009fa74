"""``lad study`` at tiny size: an SFT warm start trained once, 2 arms x 2 seeds of 4 RL steps, the
table and figures; a second invocation trains nothing; a run killed after its checkpoint resumes
and ends as the uninterrupted one did; bad configs fail naming the field."""

import json
import signal
import sys

import pytest
import yaml
from typer.testing import CliRunner

from training_runs import run, sigkill_at_step

STEPS = 4
BASE = {
    "model": "tiny:1m",
    "output_dir": "unused",
    "data": {"train": {"synthetic": {"tasks": ["countdown"], "n_per_task": 32, "seed": 0, "split": "train"}}},
    "rollout": {"engine": "native", "n": 4, "max_new_tokens": 12, "prompts_per_call": 2},
    "algorithm": {"objective": "lad", "loss_params": {"divergence": "js", "kappa": 4.0}},
    # An almost untrained model rarely writes a countdown answer: a half-weight format reward for
    # any digit gives its groups reward variance, hence real updates.
    "reward": {"answer_pattern": "([0-9])", "format_weight": 0.5},
    "train": {"prompts_per_step": 4, "mini_batch_size": 8, "micro_batch_size": 8, "max_steps": STEPS, "samples_every": 0},
    "optim": {"lr": 3.0e-3},
    "engine": {"name": "torch", "precision": "fp32"},
    "checkpoint": {"every_steps": 2, "keep_last": 2},
}
SFT = {
    "model": "tiny:1m",
    "output_dir": "unused",
    "data": {"synthetic": {"tasks": ["countdown"], "n_per_task": 64, "difficulties": [1], "seed": 0}, "max_seq_len": 256},
    "train": {"micro_batch_size": 16, "epochs": 100, "max_steps": 10, "seed": 0, "log_every": 5},
    "optim": {"lr": 0.003, "warmup_steps": 2},
    "engine": {"name": "torch", "precision": "fp32"},
    "checkpoint": {"every_steps": 100, "keep_last": 1},
    "tracking": {"enabled": False},
}
ARMS = ("grpo", "lad-js-k4")
COLUMNS = ["group", "arm", "objective", "divergence", "kappa", "seeds", "steps", "val_avg@k", "avg@8", "pass@1", "pass@4",
           "pass@16", "maj@8", "distinct_correct", "dist-3", "dist-4", "response_len", "train_min", "delta_avg@8",
           "delta_avg@8_ci95", "p_avg@8", "p_holm_avg@8"]


def _study(tmp, **changes) -> dict:
    (tmp / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp / "sft.yaml").write_text(yaml.safe_dump(SFT))
    cfg = {
        "name": "tiny",
        "output_dir": str(tmp / "out"),
        "base": str(tmp / "base.yaml"),
        "warm_start": {"sft": str(tmp / "sft.yaml"), "sft_overrides": {"train.max_steps": 8}},
        "splits": {"validation": {"n": 4, "seed": 2}, "test": {"n": 4, "seed": 1}},
        "evaluation": {"k": 16, "validation_k": 2, "every_steps": 2},
        "arms": [{"objective": "grpo", "seeds": [0, 1]}],
        "grids": [{"group": "divergence", "divergence": ["js"], "kappa": [4], "seeds": [0, 1]}],
        "max_parallel": 2,
        "bootstrap": {"resamples": 500},
    }
    cfg.update(changes)
    return cfg


def _write(tmp, cfg: dict):
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _study_cli(path):
    return run([sys.executable, "-m", "lad.cli", "study", str(path)], timeout=900)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    path = _write(tmp, _study(tmp))
    proc = _study_cli(path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, path, proc


def _runs(out):
    return {f"{arm}/seed{s}": out / "runs" / arm / f"seed{s}" for arm in ARMS for s in (0, 1)}


def test_the_grid_runs_every_arm_and_seed_from_one_warm_start_with_the_same_data_and_evaluation(study):
    tmp, _, proc = study
    out = tmp / "out"
    assert "4 run(s) trained now, 0 finished before" in proc.stderr
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(ARMS)
    warm = json.loads((out / "warm_start" / "metrics.json").read_text())
    assert warm["train/steps"] == 8  # the SFT config with the study's override, trained once
    configs = {name: yaml.safe_load((d / "train.yaml").read_text()) for name, d in _runs(out).items()}
    for name, raw in configs.items():
        arm, seed = name.split("/seed")
        assert raw["model"] == str(out / "warm_start" / "model")
        assert raw["train"]["seed"] == int(seed)
        assert raw["algorithm"]["objective"] == ("grpo" if arm == "grpo" else "lad")
        assert raw["data"]["eval"] == {"path": str(out / "data" / "validation.jsonl")}
        result = json.loads((out / "runs" / arm / f"seed{seed}" / "result.json").read_text())
        assert result["steps"] == STEPS and result["test"]["k"] == 16 and len(result["test"]["problems"]) == 4
        assert [c["step"] for c in result["validation"]] == [0, 2, 4]
    # GRPO's own loss settings, not LAD's; LAD keeps the base's
    assert configs["grpo/seed0"]["algorithm"]["loss_params"] == {}
    assert configs["lad-js-k4/seed0"]["algorithm"]["loss_params"] == {"divergence": "js", "kappa": 4.0}

    def shared(raw):
        return {k: v for k, v in raw.items() if k not in ("algorithm", "output_dir", "train")} | {
            "train": {k: v for k, v in raw["train"].items() if k != "seed"}}

    assert all(shared(raw) == shared(configs["grpo/seed0"]) for raw in configs.values())
    tests = {json.loads((d / "run.json").read_text())["test"]["benchmarks"][0]["uri"] for d in _runs(out).values()}
    assert tests == {str(out / "data" / "test.jsonl")}


def test_the_table_has_the_columns_and_the_comparison_with_the_reference(study):
    tmp, _, _ = study
    out = tmp / "out"
    summary = json.loads((out / "study.json").read_text())
    assert summary["columns"] == COLUMNS
    assert [(r["group"], r["arm"]) for r in summary["table"]] == [
        ("main", "warm-start"), ("main", "grpo"), ("divergence", "lad-js-k4")]
    for row in summary["table"]:
        assert set(row) == set(COLUMNS)
    warm, ref, lad = summary["table"]
    for row in (ref, lad):
        assert row["seeds"] == [0, 1] and len(row["avg@8"]["per_seed"]) == 2
        assert row["avg@8"]["ci_low"] <= row["avg@8"]["mean"] <= row["avg@8"]["ci_high"]
    assert ref["delta_avg@8"] is None
    assert lad["delta_avg@8"] == pytest.approx(lad["avg@8"]["mean"] - ref["avg@8"]["mean"])
    assert 0 < lad["p_avg@8"] <= 1 and set(summary["comparisons"]["lad-js-k4"]) == {"avg@8", "pass@16", "distinct_correct"}
    # one arm against the reference: a family of one, which Holm leaves as it is
    assert lad["p_holm_avg@8"] == lad["p_avg@8"] and (warm["p_holm_avg@8"], ref["p_holm_avg@8"]) == (None, None)
    assert all(c["p_holm"] == c["p_value"] for c in summary["comparisons"]["lad-js-k4"].values())

    # the warm start, evaluated as the runs are (same problems, k and sampling seed), without training
    result = json.loads((out / "warm_start_test" / "result.json").read_text())
    spec = json.loads((out / "warm_start_test" / "run.json").read_text())
    assert spec["test"]["model"] == str(out / "warm_start" / "model") and spec["train"] is False
    grpo = json.loads((out / "runs" / "grpo" / "seed0" / "run.json").read_text())["test"]
    assert {k: v for k, v in spec["test"].items() if k not in ("model", "output", "label")} == {
        k: v for k, v in grpo.items() if k not in ("model", "output", "label")}
    assert (result["steps"], result["train_s"], result["validation"]) == (0, 0.0, [])
    assert (warm["steps"], warm["seeds"], warm["train_min"]) == (0, [], None)
    assert warm["avg@8"] == {"mean": result["test"]["metrics"]["avg@8"], "ci_low": None, "ci_high": None, "n": 1,
                             "per_seed": [result["test"]["metrics"]["avg@8"]]}
    # paired with every seed of the reference: the difference is the warm start's minus the reference's mean
    assert warm["delta_avg@8"] == pytest.approx(warm["avg@8"]["mean"] - ref["avg@8"]["mean"])
    at_start = [json.loads((out / "runs" / "grpo" / f"seed{s}" / "result.json").read_text())["validation"][0] for s in (0, 1)]
    assert [c["step"] for c in at_start] == [0, 0]
    assert warm["val_avg@k"]["per_seed"] == [c["avg@2"] for c in at_start]
    assert summary["chosen_on_validation"] == {"main": "grpo", "divergence": "lad-js-k4"}
    md = (out / "study.md").read_text().splitlines()
    assert "| " + " | ".join(COLUMNS) + " |" in md
    assert [line for line in md if line.startswith("| main | warm-start | - | - | - | - | 0 |")]
    for figure in ("pass_at_k.png", "validation_curve.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_invocation_trains_nothing(study):
    tmp, path, _ = study
    out = tmp / "out"
    before = {p: p.stat().st_mtime_ns for d in _runs(out).values() for p in (d / "steps.jsonl", d / "result.json")}
    before[out / "warm_start_test" / "result.json"] = (out / "warm_start_test" / "result.json").stat().st_mtime_ns
    warm = (out / "warm_start" / "metrics.json").stat().st_mtime_ns
    proc = _study_cli(path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 run(s) trained now, 4 finished before" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (out / "warm_start" / "metrics.json").stat().st_mtime_ns == warm


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_as_the_uninterrupted_one(study):
    tmp, path, _ = study
    folder = tmp / "out" / "runs" / "grpo" / "seed1"
    finished = json.loads((folder / "result.json").read_text())
    # the state a SIGKILL after step 3 leaves: the step-2 checkpoint, three logged steps, no model
    for name in ("result.json", "metrics.json", "steps.jsonl"):
        (folder / name).unlink()
    for sub in ("model", "checkpoints", "eval", "test"):
        import shutil

        shutil.rmtree(folder / sub)
    proc = run([sys.executable, "-c", sigkill_at_step("rl", folder / "train.yaml", 3)])
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (folder / "model").exists() and (folder / "checkpoints" / "step_00000002").is_dir()

    proc = _study_cli(path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 run(s) trained now, 3 finished before" in proc.stderr
    assert f"resuming from {folder / 'checkpoints' / 'step_00000002'} (step 2 of {STEPS})" in (folder / "log").read_text()
    steps = [json.loads(line)["step"] for line in (folder / "steps.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))
    resumed = json.loads((folder / "result.json").read_text())
    assert resumed["test"] == finished["test"]
    assert resumed["validation"] == finished["validation"]


@pytest.mark.parametrize("change, message", [
    ({"grids": [{"group": "d", "divergence": ["nope"], "seeds": [0]}]}, "grids[0]: loss_params for 'lad': divergence: unknown divergence 'nope'"),
    ({"arms": [{"objective": "grpo"}]}, "arms.0.seeds: Field required"),
    ({"max_parallel": 0}, "max_parallel: Input should be greater than 0"),
    ({"reference": "ppo"}, "reference: no arm named 'ppo'"),
    ({"overrides": {"train.mini_batch_size": 7}}, "arm grpo: (top level): Value error, train.mini_batch_size 7"),
    ({"grids": [{"group": "d", "objective": ["grpo"], "kappa": [2], "seeds": [0]}]}, "grids.0: Value error, divergence and kappa apply to objective lad only"),
])
def test_a_bad_config_fails_naming_the_field(tmp_path, change, message):
    from lad.cli import app

    path = _write(tmp_path, _study(tmp_path, **change))
    result = CliRunner().invoke(app, ["study", str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ")
    assert not (tmp_path / "out").exists()  # nothing written, nothing trained


def test_a_study_without_arms_is_refused(tmp_path):
    from lad.config import ConfigError
    from lad.study.config import load_study_config

    path = _write(tmp_path, _study(tmp_path, arms=[], grids=[]))
    with pytest.raises(ConfigError, match="give at least one arm"):
        load_study_config(path)
