"""`lad eval` end to end on a tiny checkpoint with the real hf rollout engine: results, summary and
report; a run killed with SIGKILL resumes without redoing finished samples and ends with the
same results as an uninterrupted run; report re-rendering, comparison and error messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lad.cli import app

ROOT = Path(__file__).resolve().parents[1]
LAD = Path(sys.executable).parent / "lad"
runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the tiny model gains nothing from more, and on a shared 2-core
    machine competing threads slow its generation down more than tenfold."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from lad.modeling import build_tiny_model, save_model

    model, tokenizer = build_tiny_model("1m", seed=0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_model(model, tokenizer, path, {"name": "tiny-random"})
    return path


def _said(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_lad_eval_run_report_and_compare(checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # named benchmarks resolve to the bundled files from any working directory
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "run", "-m", str(checkpoint), "-b", "math500,humanevalplus,synthetic_countdown",
                                 "--k", "2", "--limit", "3", "--max-new-tokens", "16", "-o", str(out), "--label", "tiny"])
    assert result.exit_code == 0, result.output
    assert "math500: 6 samples generated, 0 reused" in _said(result)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["benchmarks"]) == ["math500", "humanevalplus", "synthetic_countdown"]
    for name, b in summary["benchmarks"].items():
        assert (b["k"], b["problems"], b["samples"]) == (2, 3, 6)
        rows = _lines(out / "samples" / f"{name}.jsonl")
        assert [(r["problem_id"], r["sample"]) for r in rows] == [(p, s) for p in range(3) for s in range(2)]
        assert all(1 <= r["tokens"] <= 16 and r["finish_reason"] in ("stop", "length") for r in rows)
        assert b["avg@2"] == sum(r["correct"] for r in rows) / 6
    assert summary["label"] == "tiny" and summary["settings"]["math500"]["sampling"]["max_new_tokens"] == 16
    report = (out / "report.md").read_text()
    assert "| math500 | 2 | 3 |" in report and (out / "plots" / "pass_at_k.png").is_file()

    (out / "report.md").unlink()
    result = runner.invoke(app, ["eval", "report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").read_text() == report

    result = runner.invoke(app, ["eval", "compare", str(out), str(out / "summary.json"), "--labels", "A,B", "-o", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "| math500 | 2 |" in (tmp_path / "cmp" / "compare.md").read_text()
    result = runner.invoke(app, ["eval", "compare", str(out), str(out)])
    assert result.exit_code == 2 and "run labels must be distinct" in _said(result)


def test_lad_eval_errors_are_one_line(checkpoint, tmp_path):
    result = runner.invoke(app, ["eval", "run", "-b", "math500"])
    assert result.exit_code == 2 and "give a config file, or --model and --benchmarks" in _said(result)
    result = runner.invoke(app, ["eval", "run", "-m", str(checkpoint), "-b", "math5000", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "unknown benchmark 'math5000'" in _said(result)
    result = runner.invoke(app, ["eval", "run", "-m", str(tmp_path / "nothing"), "-b", "synthetic_countdown", "--k", "1",
                                 "--limit", "1", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "nothing': no such directory" in _said(result)
    result = runner.invoke(app, ["eval", "run", "-m", str(checkpoint), "-b", "math500", "--k", "0"])
    assert result.exit_code == 2 and "benchmarks.0.k: Input should be greater than or equal to 1" in _said(result)
    result = runner.invoke(app, ["eval", "run", "-m", str(checkpoint), "-b", "math500", "--engine", "sglang"])
    assert result.exit_code == 2 and "engine: Value error, unknown rollout engine 'sglang'; expected one of ['hf', 'native', 'vllm']" in _said(result)
    config = tmp_path / "eval.yaml"
    config.write_text(f"model: {checkpoint}\nbenchmarks: [{{name: synthetic_countdown, k: 1, limit: 1}}]\n"
                      f"output: {tmp_path / 'o2'}\nengine_options: {{max_batch: 4}}\n")
    result = runner.invoke(app, ["eval", "run", str(config)])
    assert result.exit_code == 1 and "engine 'hf' with engine_options {'max_batch': 4}: " in _said(result)
    result = runner.invoke(app, ["eval", "report", str(tmp_path)])
    assert result.exit_code == 1 and "summary.json: no such file" in _said(result)


def test_temperature_zero_scores_each_engines_greedy_response_once_per_problem(checkpoint, tmp_path):
    from lad.evaluation.benchmarks import load_records, resolve
    from lad.evaluation.config import EvalConfig
    from lad.modeling import load_model
    from lad.rollout import SamplingParams, build_rollout

    cfg = EvalConfig(model=str(checkpoint), benchmarks=[{"name": "synthetic_arithmetic", "limit": 4}])
    prompts = [r["prompt"] for r in load_records(resolve(cfg.benchmarks[0], cfg), cfg)]
    model, tok = load_model(checkpoint)
    rows = {}
    for engine in ("hf", "native"):
        out = tmp_path / engine
        result = runner.invoke(app, ["eval", "run", "-m", str(checkpoint), "-b", "synthetic_arithmetic", "--temperature", "0",
                                     "--limit", "4", "--max-new-tokens", "16", "--engine", engine, "-o", str(out)])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        b = summary["benchmarks"]["synthetic_arithmetic"]
        assert (b["k"], b["problems"], b["samples"]) == (1, 4, 4)
        assert summary["settings"]["synthetic_arithmetic"]["sampling"]["temperature"] == 0
        rows[engine] = [(r["problem_id"], r["sample"], r["response"], r["tokens"], r["finish_reason"])
                        for r in _lines(out / "samples" / "synthetic_arithmetic.jsonl")]
        # the evaluator's samples are the engine's own greedy decoding of the same prompts
        greedy = build_rollout(engine, model, tok).generate(prompts, SamplingParams(temperature=0, max_new_tokens=16))
        assert rows[engine] == [(p, 0, c.text, len(c.token_ids), c.finish_reason) for p, (c,) in enumerate(greedy)]
    assert rows["hf"] == rows["native"]
    result = runner.invoke(app, ["eval", "run", "-m", str(checkpoint), "-b", "gsm8k", "--temperature", "0", "--k", "4"])
    assert result.exit_code == 2 and ("option benchmarks.0: Value error, temperature 0 decodes greedily, so the k = 4 "
                                      "responses of a problem would be one response repeated; set k to 1") in _said(result)


def _config(tmp_path: Path, checkpoint: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"model: {checkpoint}\noutput: {tmp_path / name}\nproblems_per_batch: 1\nseed: 7\n"
        "benchmarks: [{name: synthetic_arithmetic, n: 16, k: 4, max_new_tokens: 48}]\n"
    )
    return path


def test_sigkilled_run_resumes_to_the_uninterrupted_result(checkpoint, tmp_path):
    results = tmp_path / "cut" / "samples" / "synthetic_arithmetic.jsonl"
    proc = subprocess.Popen([str(LAD), "eval", "run", str(_config(tmp_path, checkpoint, "cut"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 240
    while (not results.exists() or results.read_bytes().count(b"\n") < 4) and proc.poll() is None:
        assert time.monotonic() < deadline, "lad eval wrote no batch in time"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    before = results.read_bytes()
    kept = before[: before.rfind(b"\n") + 1]
    finished = kept.count(b"\n")
    assert 4 <= finished < 64, f"the run was not cut short ({finished} of 64 samples)"

    result = runner.invoke(app, ["eval", "run", str(_config(tmp_path, checkpoint, "cut"))])
    assert result.exit_code == 0, result.output
    assert f"synthetic_arithmetic: {64 - finished} samples generated, {finished} reused" in _said(result)
    after = results.read_bytes()
    assert after.startswith(kept)

    # per-problem batches are seeded by where they start, so resuming changes no sample
    result = runner.invoke(app, ["eval", "run", str(_config(tmp_path, checkpoint, "whole"))])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "whole" / "samples" / "synthetic_arithmetic.jsonl").read_bytes() == after
