"""Units of the evaluation stage: registry and config, answer grouping, unit stripping, program
extraction and assembly, the results file, summary numbers and the comparison report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lad.data.public import PUBLIC_DIR
from lad.evaluation.benchmarks import BENCHMARKS, BenchmarkError, load_records, resolve
from lad.evaluation.config import ConfigError, EvalConfig, load_config
from lad.evaluation.metrics import group_equivalent
from lad.evaluation.report import write_comparison
from lad.evaluation.results import ResultsError, SampleLog, read_samples
from lad.evaluation.scoring import group_batched, strip_unit
from lad.rewards.code import LEETCODE_PREAMBLE, METHOD_SHIM, assemble_program, method_shim
from lad.rewards.extract import last_code_block
from lad.evaluation.summary import aggregate, benchmark_summary, pass_ks

ROOT = Path(__file__).resolve().parents[1]


def _cfg(*benchmarks, **kw) -> EvalConfig:
    return EvalConfig(model="m", benchmarks=list(benchmarks), **kw)


# --------------------------------------------------------------------------------------------
# registry and config
# --------------------------------------------------------------------------------------------


def test_registry_defaults_and_overrides():
    assert set(BENCHMARKS) >= {"math500", "aime24", "amc23", "olympiadbench", "minerva_math", "gsm8k", "humaneval",
                               "humanevalplus", "mbppplus", "livecodebench", "codecontests", "synthetic_countdown",
                               "synthetic_arithmetic", "synthetic_code"}
    cfg = _cfg({"name": "math500"}, {"name": "livecodebench", "k": 4, "temperature": 1.0, "stop": ["</s>"]},
               {"name": "synthetic_countdown", "n": 20, "difficulty": 2})
    math500, lcb, cd = (resolve(b, cfg) for b in cfg.benchmarks)
    assert (math500.k, math500.scorer, math500.sampling.temperature, math500.sampling.max_new_tokens) == (32, "math", 0.6, 4096)
    assert math500.source == {"uri": str(PUBLIC_DIR / "math500.jsonl.gz"), "adapter": "math500", "data_source": "math500"}
    assert (lcb.k, lcb.scorer, lcb.sampling.temperature, lcb.sampling.top_p, lcb.sampling.stop) == (4, "code", 1.0, 0.95, ["</s>"])
    assert cd.source == {"task": "countdown", "n": 20, "seed": 1234, "difficulty": 2, "data_source": "synthetic/countdown"}
    assert cd.k == 32 and BENCHMARKS["synthetic_code"].k == 16
    on_s3 = cfg.model_copy(update={"benchmarks_dir": "s3://bucket/bench/"})
    assert resolve(cfg.benchmarks[0], on_s3).source["uri"] == "s3://bucket/bench/math500.jsonl"


def test_temperature_zero_is_greedy_with_one_response_per_problem():
    cfg = _cfg({"name": "gsm8k", "temperature": 0}, {"name": "humanevalplus", "temperature": 0, "k": 1},
               {"name": "math500", "temperature": 0.0001})
    gsm8k, hep, math500 = (resolve(b, cfg) for b in cfg.benchmarks)
    assert (gsm8k.k, gsm8k.sampling.temperature, hep.k, hep.sampling.temperature) == (1, 0, 1, 0)
    assert math500.k == 32  # any temperature above 0 samples, with the registry's k
    with pytest.raises(ValueError, match=r"benchmarks\.0\n  Value error, temperature 0 decodes greedily, so the k = 4 "
                                         r"responses of a problem would be one response repeated; set k to 1"):
        _cfg({"name": "gsm8k", "temperature": 0, "k": 4})
    with pytest.raises(ValueError, match=r"temperature\n  Input should be greater than or equal to 0"):
        _cfg({"name": "gsm8k", "temperature": -1})


def test_registry_errors_name_the_benchmark_and_field():
    cfg = _cfg({"name": "math5000"})
    with pytest.raises(BenchmarkError, match=r"unknown benchmark 'math5000'; registered: \['aime24'"):
        resolve(cfg.benchmarks[0], cfg)
    cfg = _cfg({"name": "math500", "n": 5})
    with pytest.raises(BenchmarkError, match="benchmark math500: n, difficulty and seed apply to synthetic benchmarks only"):
        resolve(cfg.benchmarks[0], cfg)
    cfg = _cfg({"name": "aime24", "uri": "/nowhere/aime.jsonl"})
    with pytest.raises(BenchmarkError, match="benchmark aime24: /nowhere/aime.jsonl: no such file"):
        load_records(resolve(cfg.benchmarks[0], cfg), cfg)
    with pytest.raises(ValueError, match="benchmark names must be unique in a run; repeated: \\['gsm8k'\\]"):
        _cfg({"name": "gsm8k"}, {"name": "gsm8k", "k": 2})


def test_bad_rows_of_a_benchmark_file_are_named(tmp_path):
    bad = tmp_path / "aime.jsonl"
    bad.write_text('{"id": 1, "problem": "What?", "answer": "3"}\n{"id": 2, "problem": "", "answer": "4"}\n')
    cfg = _cfg({"name": "aime24", "uri": str(bad)})
    with pytest.raises(BenchmarkError, match=r"benchmark aime24: 1 bad row\(s\): .*aime.jsonl, line 2, field problem: empty"):
        load_records(resolve(cfg.benchmarks[0], cfg), cfg)


def test_records_from_data_prep_output(tmp_path):
    from lad.data.synthetic import generate

    records = generate("arithmetic", 5, seed=3, split="test")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), tmp_path / "eval.parquet")
    cfg = _cfg({"name": "synthetic_arithmetic", "uri": str(tmp_path / "eval.parquet"), "records": True, "limit": 4})
    loaded = load_records(resolve(cfg.benchmarks[0], cfg), cfg)
    assert [r["reward_model"] for r in loaded] == [r["reward_model"] for r in records[:4]]
    broken = dict(records[0], ability="poetry")
    (tmp_path / "bad.jsonl").write_text(json.dumps(records[1]) + "\n" + json.dumps(broken) + "\n")
    cfg = _cfg({"name": "synthetic_arithmetic", "uri": str(tmp_path / "bad.jsonl"), "records": True})
    with pytest.raises(BenchmarkError, match=r"bad.jsonl, line 2, field ability: Input should be 'math' or 'code'"):
        load_records(resolve(cfg.benchmarks[0], cfg), cfg)


def test_shipped_configs_load_and_resolve():
    paths = sorted((ROOT / "configs" / "eval").glob("*.yaml"))
    assert [p.name for p in paths] == ["paper_code.yaml", "paper_math.yaml", "smollm2_baseline.yaml", "tiny.yaml"]
    for path in paths:
        cfg = load_config(path)
        runs = [resolve(b, cfg) for b in cfg.benchmarks]
        assert runs and all(r.k >= 1 for r in runs)
    math = load_config(ROOT / "configs" / "eval" / "paper_math.yaml")
    assert {resolve(b, math).k for b in math.benchmarks[:5]} == {32}
    baseline = load_config(ROOT / "configs" / "eval" / "smollm2_baseline.yaml")
    assert [(r.name, r.limit, r.k, r.sampling.temperature, r.sampling.top_p) for r in (resolve(b, baseline) for b in baseline.benchmarks)] == [
        ("gsm8k", 200, 32, 0.6, 0.95), ("math500", 100, 32, 0.6, 0.95), ("humanevalplus", None, 16, 0.6, 0.95)]


def test_config_errors_name_file_and_field(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("model: m\nbenchmarks:\n  - {name: math500, k: 0}\n")
    with pytest.raises(ConfigError, match=r"eval.yaml: benchmarks.0.k: Input should be greater than or equal to 1"):
        load_config(path)
    path.write_text("model: m\nbenchmarks: [{name: math500}]\ntemprature: 1\n")
    with pytest.raises(ConfigError, match=r"eval.yaml: temprature: Extra inputs are not permitted"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"missing.yaml: no such file"):
        load_config(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------------------------
# scoring helpers
# --------------------------------------------------------------------------------------------


def test_group_batched_matches_group_equivalent():
    rng = random.Random(0)
    # equivalence: same value mod 3 (a true equivalence), and a non-transitive one (|a-b| <= 1)
    for relation in (lambda a, b: int(a) % 3 == int(b) % 3, lambda a, b: abs(int(a) - int(b)) <= 1):
        problems = [[str(rng.randint(0, 9)) for _ in range(rng.randint(0, 12))] for _ in range(30)]
        calls = []

        def many(pairs, relation=relation):
            calls.append(len(pairs))
            return [relation(a, b) for a, b in pairs]

        batched = group_batched(problems, many)
        for items, labels in zip(problems, batched):
            assert [labels[x] for x in items] == group_equivalent(items, relation)
        assert len(calls) <= 10  # one call per round; a round per distinct item of the longest problem


@pytest.mark.parametrize("answer,unit,expected", [
    ("4.2\\%", "%", "4.2"),
    ("4.2%", "%", "4.2"),
    ("166 \\mathrm{cm^2}", "cm^2", "166"),
    ("\\frac{600}{7}\\text{ km/h}", "km/h", "\\frac{600}{7}"),
    ("50 minutes", "minutes", "50"),
    ("50", "minutes", "50"),
    ("minutes", "minutes", "minutes"),  # nothing left: keep what was written
    ("x^2", None, "x^2"),
])
def test_strip_unit(answer, unit, expected):
    assert strip_unit(answer, unit) == expected


def test_extract_program_takes_the_last_fenced_block():
    assert last_code_block("a\n```python\nx = 1\n```\nb\n```py\ny = 2\n```") == "y = 2\n"
    assert last_code_block("```\nz = 3\n```") == "z = 3\n"
    assert last_code_block("```Python3\nq = 4\n```") == "q = 4\n"
    assert last_code_block("def f(): pass") is None
    assert last_code_block("```python\nunterminated") is None


def test_assemble_program_completes_with_the_starter_code():
    starter = "from typing import List\nimport math\n\ndef f(xs: List[int]) -> int:\n    \"\"\"Doc.\"\"\"\n"
    info = {"entry_point": "f", "starter_code": starter}
    whole = "def f(xs):\n    return len(xs)\n"
    assert assemble_program(whole, info) == "from typing import List\nimport math\n" + whole
    body = "    return len(xs)\n"
    assert assemble_program(body, info) == starter + body
    assert assemble_program(whole, {"entry_point": None, "starter_code": None}) == whole
    lc = {"entry_point": "Solution.g", "starter_code": "class Solution:\n    def g(self, a: List[int]) -> int:\n        "}
    assert assemble_program("class Solution:\n    pass\n", lc) == LEETCODE_PREAMBLE + "class Solution:\n    pass\n"


def test_method_shim_routes_class_methods_through_a_function():
    tests = [{"type": "call", "entry_point": "Solution.g", "args": [1], "expected": 2, "atol": 0.0},
             {"type": "stdin", "input": "", "output": ""}]
    program, routed = method_shim("class Solution: ...\n", tests)
    assert program.endswith(f"def {METHOD_SHIM}(*args):\n    return Solution().g(*args)\n")
    assert routed[0] == dict(tests[0], entry_point=METHOD_SHIM) and routed[1] == tests[1]
    plain = [dict(tests[0], entry_point="f")]
    assert method_shim("def f(x): ...\n", plain) == ("def f(x): ...\n", plain)


# --------------------------------------------------------------------------------------------
# results file
# --------------------------------------------------------------------------------------------


def _row(pid: int, sample: int, correct: bool = True) -> dict:
    return {"benchmark": "b", "problem_id": pid, "source_id": None, "sample": sample, "response": "r", "answer": "1",
            "correct": correct, "reason": "correct" if correct else "wrong", "tokens": 3, "finish_reason": "stop"}


def test_sample_log_appends_resumes_and_checks_settings(tmp_path):
    path = tmp_path / "samples" / "b.jsonl"
    with SampleLog(path, {"k": 2}) as log:
        log.append([_row(0, 0), _row(0, 1)])
    with path.open("ab") as f:
        f.write(b'{"benchmark": "b", "probl')
    rows, end, torn = read_samples(path)
    assert len(rows) == 2 and torn and end == len(path.read_bytes()) - len(b'{"benchmark": "b", "probl')
    with SampleLog(path, {"k": 2}) as log:
        assert log.dropped_torn_line and log.done() == {(0, 0), (0, 1)}
        log.append([_row(1, 0)])
    assert [json.loads(x)["problem_id"] for x in path.read_text().splitlines()] == [0, 0, 1]
    with pytest.raises(ResultsError, match=r"b.jsonl: these results were made with other settings \(changed: k\)"):
        SampleLog(path, {"k": 3}).open()
    path.with_name("b.meta.json").unlink()
    with pytest.raises(ResultsError, match=r"b.jsonl: results without b.meta.json"):
        SampleLog(path, {"k": 2}).open()
    path.write_text(json.dumps({"benchmark": "b"}) + "\n")
    with pytest.raises(ResultsError, match=r"b.jsonl, line 1: missing field\(s\) \['problem_id'"):
        read_samples(path)


# --------------------------------------------------------------------------------------------
# summary and comparison
# --------------------------------------------------------------------------------------------


def _problems(verdicts: list[list[bool]], answers: list[list[str]]) -> dict[int, list[dict]]:
    out = {}
    for pid, (vs, ans) in enumerate(zip(verdicts, answers)):
        out[pid] = [dict(_row(pid, s, v), answer=a, response=f"step {a} done", tokens=10 * (s + 1)) for s, (v, a) in enumerate(zip(vs, ans))]
    return out


def test_benchmark_summary_hand_computed():
    # problem 0: 1 of 4 correct, the wrong answers agree (vote lost); problem 1: 3 of 4, two forms
    # of the right answer ("1/2" and "0.5", one class); problem 2: none correct
    verdicts = [[True, False, False, False], [True, True, True, False], [False] * 4]
    answers = [["7", "8", "8", "8"], ["1/2", "0.5", "1/2", "3"], ["1", "2", "3", "4"]]
    classes = {0: {"7": 0, "8": 1}, 1: {"1/2": 0, "0.5": 0, "3": 1}, 2: {"1": 0, "2": 1, "3": 2, "4": 3}}
    s = benchmark_summary("t", "math", 4, _problems(verdicts, answers), classes, dist_n=[1, 2], resamples=100)
    assert s["avg@4"] == pytest.approx((0.25 + 0.75 + 0) / 3)
    # pass@2 = 1 - C(n-c,2)/C(n,2): problem 0: 1 - 3/6; problem 1: 1 - 0; problem 2: 0
    assert s["pass@2"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert s["pass@4"] == pytest.approx(2 / 3) and pass_ks(4) == [1, 2, 4] and len(s["pass@k_curve"]) == 4
    assert s["maj@4"] == pytest.approx(1 / 3)
    # distinct correct: problem 0 one ("7"), problem 1 one class ("1/2" ~ "0.5"), problem 2 none
    assert s["distinct_correct"] == pytest.approx(2 / 3)
    # dist-1 of problem 0: tokens step,7,done,step,8,done,... -> {step, done, 7, 8} / 12
    assert s["dist-1"] == pytest.approx((4 / 12 + 5 / 12 + 6 / 12) / 3)
    assert s["dist-2"] == pytest.approx((4 / 8 + 6 / 8 + 8 / 8) / 3)  # bigrams "step a", "a done" per response
    assert s["response_tokens"]["mean"] == 25.0 and s["response_tokens_correct"]["mean"] == pytest.approx(70 / 4)
    lo, hi = s["avg@4_ci95"]
    assert 0 <= lo <= s["avg@4"] <= hi <= 0.75
    with pytest.raises(ValueError, match="t: 1 problem\\(s\\) do not have k=5 samples"):
        benchmark_summary("t", "math", 5, {0: _problems(verdicts, answers)[0] + [_row(0, 4)], 1: []}, {}, dist_n=[1])


def _summary(label: str, values: dict[str, tuple[float, float]]) -> dict:
    benches = {}
    for name, (avg, pas) in values.items():
        benches[name] = {"benchmark": name, "ability": "math", "k": 2, "problems": 1, "avg@2": avg, "avg@2_ci95": [avg, avg],
                         "pass@1": avg, "pass@2": pas, "pass@k_curve": [avg, pas], "maj@2": avg, "dist-4": 0.5,
                         "distinct_correct": 1.0, "response_tokens": {"mean": 10.0}}
    return {"label": label, "model": f"/ckpt/{label}", "engine": "hf", "benchmarks": benches, "aggregate": aggregate(benches)}


def test_comparison_table_and_figure(tmp_path):
    runs = [("SFT", _summary("SFT", {"math500": (0.25, 0.5), "aime24": (0.0, 0.1)})),
            ("LAD", _summary("LAD", {"math500": (0.5, 0.75), "aime24": (0.1, 0.3)})),
            ("GRPO", _summary("GRPO", {"math500": (0.45, 0.6)}))]
    paths = write_comparison(runs, tmp_path)
    assert [p.name for p in paths] == ["compare.json", "compare.png", "compare.md", "compare.html"]
    md = (tmp_path / "compare.md").read_text()
    assert ("| benchmark | k | SFT Avg@k (95% CI) | LAD Avg@k (95% CI) | GRPO Avg@k (95% CI) | SFT Pass@k | LAD Pass@k "
            "| GRPO Pass@k |") in md
    assert "| math500 | 2 | 25.00 [25.00, 25.00] | 50.00 [50.00, 50.00] | 45.00 [45.00, 45.00] | 50.00 | 75.00 | 60.00 |" in md
    assert "| aime24 | 2 | 0.00 [0.00, 0.00] | 10.00 [10.00, 10.00] | – | 10.00 | 30.00 | – |" in md
    assert ("| math500 | 25.00 | 50.00 | 45.00 | 1.00 | 1.00 | 1.00 | – | – | – | 0.500 | 0.500 | 0.500 |") in md
    assert "| mean |  | 12.50 | 30.00 | 45.00 | 30.00 | 52.50 | 60.00 |" in md
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["benchmarks"]["aime24"]["LAD"]["pass@k"] == 0.3 and "GRPO" not in data["benchmarks"]["aime24"]
    assert (tmp_path / "plots" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="run labels must be distinct"):
        write_comparison([runs[0], runs[0]], tmp_path)


def test_report_label_defaults_to_a_telling_folder_name():
    from lad.evaluation.stage import _label

    assert _label(_cfg({"name": "gsm8k"}).model_copy(update={"model": "out/sft-tiny/model"})) == "sft-tiny/model"
    assert _label(_cfg({"name": "gsm8k"}).model_copy(update={"model": "ckpts/step-100/"})) == "step-100"
    assert _label(_cfg({"name": "gsm8k"}, label="LAD").model_copy(update={"model": "x/model"})) == "LAD"


def test_answer_classes_math_by_equivalence_countdown_by_expression_code_by_program():
    from lad.evaluation.scoring import CodeScorer, MathScorer

    math_record = {"data_source": "math500", "ability": "math"}
    countdown = {"data_source": "synthetic/countdown", "ability": "math"}
    scorer = MathScorer()
    try:
        classes = scorer.answer_classes(
            [["1/2", "3", "0.5", "\\frac{1}{2}", "3.0"], ["1 + 2 * 3", "2 * 3 + 1", "1+2*3"]], [math_record, countdown]
        )
    finally:
        scorer.close()
    assert classes == [{"1/2": 0, "3": 1, "0.5": 0, "\\frac{1}{2}": 0, "3.0": 1}, {"1 + 2 * 3": 0, "2 * 3 + 1": 1, "1+2*3": 0}]
    programs = ["def f(x):\n    return x + 1\n", "def f(x):\n    # add one\n    return x+1\n", "def f(x):\n    return 1 + x\n"]
    code = CodeScorer()
    assert code.answer_classes([programs], [{}]) == [{programs[0]: 0, programs[1]: 0, programs[2]: 1}]
    code.close()
