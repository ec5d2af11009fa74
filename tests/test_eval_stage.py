"""The evaluation stage with a scripted rollout engine: scoring, per-sample JSONL, resume after an
interruption or a torn write, refusal to mix settings, summary numbers and the reports.

The scripted engine answers each prompt from a table (a real engine is exercised end to end in
test_eval_cli.py); what it returns for a prompt depends only on the prompt and the completion's
position, so an interrupted-then-resumed run must reproduce the uninterrupted run exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lad.evaluation.benchmarks import load_records, resolve
from lad.evaluation.config import EvalConfig
from lad.evaluation.results import ResultsError
from lad.evaluation.stage import run_eval
from lad.rollout.base import Completion, SamplingParams



class ScriptedEngine:
    """A RolloutEngine whose j-th completion for a prompt is ``script[prompt][j]``."""

    def __init__(self, script: dict[str, list[str]], interrupt_at_call: int | None = None):
        self.script = script
        self.interrupt_at_call = interrupt_at_call
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def generate(self, prompts, params):
        keys = [p[-1]["content"] for p in prompts]
        self.calls.append((keys, params))
        if self.interrupt_at_call is not None and len(self.calls) == self.interrupt_at_call:
            raise KeyboardInterrupt("interrupted by the test")
        out = []
        for key in keys:
            texts = self.script[key][: params.n]
            out.append([Completion(t, list(range(len(t.split()) + 1)), [0.0] * (len(t.split()) + 1),
                                   "length" if t.endswith("...") else "stop") for t in texts])
        return out

    def update_weights(self, model) -> None:
        raise AssertionError("not used")

    @property
    def prompts_generated(self) -> list[str]:
        return [key for keys, _ in self.calls for key in keys]


def _config(tmp_path: Path, **bench) -> EvalConfig:
    return EvalConfig(
        model=str(tmp_path / "no-model"), output=str(tmp_path / "out"), label="scripted", problems_per_batch=4,
        benchmarks=[bench], bootstrap_resamples=200,
    )


def _arithmetic_script(cfg: EvalConfig, k: int) -> tuple[dict[str, list[str]], list[int]]:
    """Problem i gets i % (k + 1) correct answers among its k samples (then wrong, then none)."""
    records = load_records(resolve(cfg.benchmarks[0], cfg), cfg)
    script, correct = {}, []
    for i, r in enumerate(records):
        gt = r["reward_model"]["ground_truth"]
        c = i % (k + 1)
        texts = [f"so it is \\boxed{{{gt}}}" for _ in range(c)]
        texts += [f"maybe \\boxed{{{int(gt) + 1}}}" if j % 2 == 0 else "I cannot tell..." for j in range(k - c)]
        script[r["prompt"][-1]["content"]] = texts
        correct.append(c)
    return script, correct


def test_scored_samples_summary_and_report(tmp_path):
    k = 4
    cfg = _config(tmp_path, name="synthetic_arithmetic", n=10, k=k, max_new_tokens=64)
    script, correct = _arithmetic_script(cfg, k)
    engine = ScriptedEngine(script)
    summary = run_eval(cfg, engine=engine)

    out = Path(cfg.output)
    rows = [json.loads(line) for line in (out / "samples" / "synthetic_arithmetic.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and {(r["problem_id"], r["sample"]) for r in rows} == {(p, s) for p in range(10) for s in range(4)}
    assert [sum(r["correct"] for r in rows if r["problem_id"] == p) for p in range(10)] == correct
    first = next(r for r in rows if r["problem_id"] == 1 and r["sample"] == 0)
    assert first["correct"] is True and first["reason"] == "correct" and first["response"] == f"so it is \\boxed{{{first['answer']}}}"
    assert {r["reason"] for r in rows} == {"correct", "wrong", "no_answer"}
    # 3 calls: problems 0-3, 4-7, 8-9, each asking for all k samples with the configured sampling
    assert [len(keys) for keys, _ in engine.calls] == [4, 4, 2]
    assert {(p.n, p.temperature, p.top_p, p.max_new_tokens) for _, p in engine.calls} == {(4, 0.6, 0.95, 64)}

    b = summary["benchmarks"]["synthetic_arithmetic"]
    assert b["k"] == 4 and b["problems"] == 10 and b["samples"] == 40
    assert b["avg@4"] == pytest.approx(sum(correct) / 40)
    # pass@4 with n = k: a problem counts when any sample is correct
    assert b["pass@4"] == pytest.approx(sum(c > 0 for c in correct) / 10)
    assert b["pass@1"] == pytest.approx(b["avg@4"])
    assert b["pass@k_curve"][0] == pytest.approx(b["avg@4"]) and b["pass@k_curve"][-1] == pytest.approx(b["pass@4"])
    # votes: c correct vs ceil((k-c)/2) wrong answers (all the same wrong number); ties go to the first seen
    assert b["maj@4"] == pytest.approx(sum(c >= 1 and c >= (k - c + 1) // 2 for c in correct) / 10)
    assert b["distinct_correct"] == pytest.approx(sum(c > 0 for c in correct) / 10)
    assert b["truncated_rate"] == pytest.approx(sum((k - c) // 2 for c in correct) / 40)
    assert b["reasons"] == {"correct": sum(correct), "wrong": sum((k - c + 1) // 2 for c in correct),
                            "no_answer": sum((k - c) // 2 for c in correct)}
    assert summary["aggregate"]["all"]["avg@k"] == b["avg@4"] and summary["aggregate"]["math"]["benchmarks"] == ["synthetic_arithmetic"]
    assert summary["run"] == {"synthetic_arithmetic": {"reused_samples": 0, "generated_samples": 40}}
    assert json.loads((out / "summary.json").read_text()) == summary

    md = (out / "report.md").read_text()
    assert f"| synthetic_arithmetic | 4 | 10 | {100 * b['avg@4']:.2f} [" in md
    assert "![Pass@k curves per benchmark](plots/pass_at_k.png)" in md
    assert (out / "plots" / "pass_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (out / "report.html").read_text()

    # a second run with the same settings generates nothing and reproduces the summary
    again = ScriptedEngine(script)
    summary2 = run_eval(cfg, engine=again)
    assert again.calls == []
    assert summary2["run"] == {"synthetic_arithmetic": {"reused_samples": 40, "generated_samples": 0}}
    assert {k2: v for k2, v in summary2.items() if k2 != "run"} == {k2: v for k2, v in summary.items() if k2 != "run"}


def test_interrupted_run_resumes_without_recomputing_finished_samples(tmp_path):
    k = 4
    whole = _config(tmp_path / "whole", name="synthetic_arithmetic", n=12, k=k)
    script, _ = _arithmetic_script(whole, k)
    reference = run_eval(whole, engine=ScriptedEngine(script))

    cfg = _config(tmp_path / "cut", name="synthetic_arithmetic", n=12, k=k)
    results = Path(cfg.output) / "samples" / "synthetic_arithmetic.jsonl"
    interrupted = ScriptedEngine(script, interrupt_at_call=3)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, engine=interrupted)
    before = results.read_bytes()
    assert len(before.splitlines()) == 32  # two finished batches of 4 problems x 4 samples
    assert not (Path(cfg.output) / "summary.json").exists()

    resumed = ScriptedEngine(script)
    summary = run_eval(cfg, engine=resumed)
    after = results.read_bytes()
    assert after.startswith(before)  # finished lines untouched
    records = load_records(resolve(cfg.benchmarks[0], cfg), cfg)
    assert resumed.prompts_generated == [r["prompt"][-1]["content"] for r in records[8:]]
    assert summary["run"]["synthetic_arithmetic"] == {"reused_samples": 32, "generated_samples": 16}
    assert {k2: v for k2, v in summary.items() if k2 not in ("run", "model")} == \
        {k2: v for k2, v in reference.items() if k2 not in ("run", "model")}


def test_torn_last_line_is_dropped_and_only_that_sample_redone(tmp_path):
    k = 4
    cfg = _config(tmp_path, name="synthetic_arithmetic", n=4, k=k)
    script, _ = _arithmetic_script(cfg, k)
    run_eval(cfg, engine=ScriptedEngine(script))
    results = Path(cfg.output) / "samples" / "synthetic_arithmetic.jsonl"
    lines = results.read_bytes().splitlines(keepends=True)
    last = json.loads(lines[-1])
    results.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a write cut mid-line

    notices = []
    engine = ScriptedEngine(script)
    summary = run_eval(cfg, engine=engine, notice=notices.append)
    assert len(notices) == 1 and "torn last line" in notices[0]
    assert len(engine.calls) == 1 and engine.calls[0][1].n == 1
    records = load_records(resolve(cfg.benchmarks[0], cfg), cfg)
    assert engine.prompts_generated == [records[last["problem_id"]]["prompt"][-1]["content"]]
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert len(rows) == 16 and rows[-1]["problem_id"] == last["problem_id"] and rows[-1]["sample"] == last["sample"]
    assert summary["run"]["synthetic_arithmetic"] == {"reused_samples": 15, "generated_samples": 1}


def test_resume_refuses_other_settings_and_edited_files(tmp_path):
    cfg = _config(tmp_path, name="synthetic_arithmetic", n=4, k=2)
    script, _ = _arithmetic_script(cfg, 2)
    run_eval(cfg, engine=ScriptedEngine(script))
    hotter = cfg.model_copy(update={"benchmarks": [cfg.benchmarks[0].model_copy(update={"temperature": 1.0})]})
    with pytest.raises(ResultsError, match=r"synthetic_arithmetic.jsonl: these results were made with other settings \(changed: benchmark\)"):
        run_eval(hotter, engine=ScriptedEngine(script))
    # --restart discards them and starts over
    engine = ScriptedEngine(script)
    summary = run_eval(hotter, engine=engine, restart=True)
    assert summary["run"]["synthetic_arithmetic"] == {"reused_samples": 0, "generated_samples": 8}
    assert {p.temperature for _, p in engine.calls} == {1.0}

    results = Path(cfg.output) / "samples" / "synthetic_arithmetic.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text(lines[0] + "{not json\n" + "".join(lines[2:]))
    with pytest.raises(ResultsError, match=r"synthetic_arithmetic.jsonl, line 2: not valid JSON"):
        run_eval(hotter, engine=ScriptedEngine(script))


def test_code_benchmark_scored_in_the_sandbox(tmp_path):
    cfg = _config(tmp_path, name="synthetic_code", n=4, k=3)
    records = load_records(resolve(cfg.benchmarks[0], cfg), cfg)
    script = {}
    for r in records:
        solution = r["extra_info"]["solution"]
        wrong = solution.replace("return ", "return 1 + ")
        # sample 0 right, sample 1 the same program with another docstring and comment, sample 2 wrong
        script[r["prompt"][-1]["content"]] = [
            f"```python\n{solution}```",
            "Here:\n```py\n" + solution.replace("):\n", '):\n    """spec"""\n    # same\n', 1) + "```",
            f"```python\n{wrong}```",
        ]
    summary = run_eval(cfg, engine=ScriptedEngine(script))
    rows = [json.loads(x) for x in (Path(cfg.output) / "samples" / "synthetic_code.jsonl").read_text().splitlines()]
    assert [(r["sample"], r["correct"], r["reason"]) for r in rows if r["problem_id"] == 0] == \
        [(0, True, "correct"), (1, True, "correct"), (2, False, "failed")]
    b = summary["benchmarks"]["synthetic_code"]
    assert b["avg@3"] == pytest.approx(2 / 3) and b["pass@3"] == 1.0
    # the two correct programs differ only in docstring and comment: one distinct correct program
    assert b["distinct_correct"] == 1.0 and b["distinct_correct_of"] == "programs"
    assert summary["aggregate"]["code"]["benchmarks"] == ["synthetic_code"]


def test_more_problems_extend_a_run_and_fewer_summarise_a_subset(tmp_path):
    cfg = _config(tmp_path, name="synthetic_arithmetic", n=6, k=2)
    script, correct = _arithmetic_script(cfg, 2)
    small = cfg.model_copy(update={"benchmarks": [cfg.benchmarks[0].model_copy(update={"n": 4})]})
    assert run_eval(small, engine=ScriptedEngine(script))["run"]["synthetic_arithmetic"] == {"reused_samples": 0, "generated_samples": 8}
    engine = ScriptedEngine(script)
    summary = run_eval(cfg, engine=engine)
    assert summary["run"]["synthetic_arithmetic"] == {"reused_samples": 8, "generated_samples": 4}
    assert len(engine.prompts_generated) == 2 and summary["benchmarks"]["synthetic_arithmetic"]["problems"] == 6
    fewer = cfg.model_copy(update={"benchmarks": [cfg.benchmarks[0].model_copy(update={"limit": 3})]})
    engine = ScriptedEngine(script)
    b = run_eval(fewer, engine=engine)["benchmarks"]["synthetic_arithmetic"]
    assert engine.calls == [] and b["problems"] == 3 and b["avg@2"] == pytest.approx(sum(correct[:3]) / 6)
