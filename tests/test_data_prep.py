import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from servers import s3, s3_server  # noqa: F401
from typer.testing import CliRunner

from lad import storage
from lad.cli import app
from lad.data.config import ConfigError, PrepConfig, load_config
from lad.data.filters import ContaminationIndex, ngrams, normalise
from lad.data.prep import TEMPLATE_METADATA_KEY, PrepError, run_prep
from lad.data.public import read_text
from lad.data.schema import Problem, Record, parse_tests
from lad.data.synthetic import TASKS

ROOT = Path(__file__).resolve().parents[1]
MANIFEST_ROWS = {  # lad/data/public/MANIFEST.json
    "math500": 500, "aime24": 30, "amc23": 40, "amc22_23": 83, "olympiadbench": 675, "minerva_math": 272,
    "gsm8k": 1319, "humaneval": 164, "humanevalplus": 164, "mbppplus": 378, "livecodebench": 279, "codecontests": 165,
}


def _rows(path):
    return pq.read_table(path).to_pylist()


def _cfg(tmp_path, sources, **kw):
    return PrepConfig.model_validate({"output": str(tmp_path / "out"), "sources": sources, **kw})


# --------------------------------------------------------------------------------------------
# the bundled public benchmarks, end to end
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def benchmarks_prepped(tmp_path_factory):
    cfg = load_config(ROOT / "configs/data/math_code.yaml")  # lad:// sources: the bundled files
    out = tmp_path_factory.mktemp("bench") / "out"
    report = run_prep(cfg.model_copy(update={"output": str(out)}))
    return out, report


def test_every_bundled_benchmark_file_becomes_canonical_rows(benchmarks_prepped):
    out, report = benchmarks_prepped
    assert report["status"] == "ok"
    for name, rows in MANIFEST_ROWS.items():
        counts = report["sources"][name]
        assert counts == counts | {"read": rows, "kept": rows, "rejected": 0, "duplicate": 0, "contaminated": 0}, name
        records = _rows(out / "eval" / f"{name}.parquet")
        assert len(records) == rows
        for rec in records:
            Record.model_validate(rec)
            assert rec["data_source"] == name and rec["extra_info"]["split"] == "test"
        assert [r["extra_info"]["index"] for r in records] == list(range(rows))
    # MATH train: 4 rows have no final answer (quarantined by the config), 1 repeats, 84 share a 13-gram with an eval set
    train = report["sources"]["math_train"]
    assert train == train | {"read": 7474, "rejected": 4, "duplicate": 1, "contaminated": 84, "kept": 7385}
    assert [e["where"] for e in report["errors"]] == ["line 887", "line 1010", "line 5329", "line 5331"]
    assert len(_rows(out / "train.parquet")) == 7385
    assert [json.loads(l)["where"] for l in (out / "quarantine.jsonl").read_text().splitlines()] == [e["where"] for e in report["errors"]]
    assert storage.is_published(str(out))


def test_benchmark_fields_are_mapped(benchmarks_prepped):
    out, report = benchmarks_prepped
    ev = {name: _rows(out / "eval" / f"{name}.parquet") for name in MANIFEST_ROWS}
    truth = {name: [r["reward_model"]["ground_truth"] for r in rows] for name, rows in ev.items()}
    assert truth["gsm8k"][0] == "18"
    assert "2125" in truth["gsm8k"]  # "#### 2,125": thousands separator dropped
    assert truth["amc23"][0] == "27"  # 27.0
    assert truth["aime24"][0] == "204"
    assert truth["math500"][0] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert truth["minerva_math"][0] == "9.6"  # ["9.6\n"]
    assert json.loads(ev["minerva_math"][5]["extra_info"]["all_answers"]) == ["1.6"]
    assert truth["olympiadbench"][:2] == ["2", "\\frac{1}{2 n+2}"]  # ["$\\frac{1}{2 n+2}$"]
    assert "69,84" in truth["olympiadbench"]  # ["$69$,$84$"]
    units = {r["extra_info"]["unit"] for r in ev["olympiadbench"]} - {None}
    assert units == {"^{\\circ}", "minute", "km", "cm^2", "km/h", "min", "minutes", "%"}
    # code: test formats
    he = ev["humaneval"][0]
    assert he["extra_info"]["test_type"] == "assert" and he["extra_info"]["entry_point"] == "has_close_elements"
    assert parse_tests(he["extra_info"]["tests"])[0].code.endswith("check(has_close_elements)\n")
    assert he["extra_info"]["starter_code"] in he["prompt"][-1]["content"]
    hep = ev["humanevalplus"][0]["extra_info"]
    cases = json.loads(hep["tests"])
    raw = json.loads(read_text("humanevalplus.jsonl").partition("\n")[0])
    assert hep["test_type"] == "reference" and hep["base_tests"] == len(raw["base_input"]) == 7
    assert [c["args"] for c in cases] == raw["base_input"] + raw["plus_input"]
    assert {c["expected"] for c in cases} == {None}
    assert hep["reference_solution"] == raw["prompt"] + raw["canonical_solution"]
    assert sum(len(json.loads(r["extra_info"]["tests"])) for r in ev["humanevalplus"]) == 1570 + 122683
    mbpp = ev["mbppplus"][0]
    assert mbpp["extra_info"]["test_type"] == "reference" and mbpp["extra_info"]["starter_code"] is None
    assert mbpp["prompt"][-1]["content"].startswith('"""\nWrite a function to find the shared elements')
    assert sum(len(json.loads(r["extra_info"]["tests"])) for r in ev["mbppplus"]) == 41015 - 5
    lcb = {r["extra_info"]["test_type"] for r in ev["livecodebench"]}
    assert lcb == {"stdin", "call"}
    functional = next(r for r in ev["livecodebench"] if r["extra_info"]["test_type"] == "call")
    first = json.loads(functional["extra_info"]["tests"])[0]
    assert first["entry_point"] == "Solution.shortestDistanceAfterQueries" == functional["extra_info"]["entry_point"]
    assert first["args"] == [5, [[2, 4], [0, 2], [0, 4]]] and first["expected"] == [3, 2, 1]
    assert sum(r["extra_info"]["test_type"] == "stdin" for r in ev["livecodebench"]) == 175
    cc = json.loads(ev["codecontests"][0]["extra_info"]["tests"])
    assert cc == [{"type": "stdin", "input": "5 2\nAA\nAB\nBB\nBA\nAZ\n", "output": "5 2 1 3 4 \n"}]
    # the template is in every output and in the report
    meta = pq.read_schema(out / "train.parquet").metadata[TEMPLATE_METADATA_KEY]
    assert json.loads(meta) == report["template"]
    assert all(r["prompt"][-1]["content"].endswith("Put the final answer in \\boxed{}.") for r in ev["math500"])


# --------------------------------------------------------------------------------------------
# a broken file
# --------------------------------------------------------------------------------------------

BROKEN_LINES = [
    '{"question": "Tom has 3 cats and buys 2 more. How many cats?", "answer": "3 + 2 = 5\\n#### 5"}',
    '{"question": "Half of 10?", "answer": "#### 5"',  # line 2: cut short
    '{"answer": "#### 7"}',  # line 3: no question
    '{"question": "What is 2 + 2?", "answer": "the answer is four"}',  # line 4: no "#### N"
    "",  # blank lines are not rows
    '{"question": "   ", "answer": "#### 1"}',  # line 6: empty prompt
    '{"question": 12, "answer": "#### 1"}',  # line 7: ill-typed
    '["not", "an", "object"]',  # line 8
    '{"question": "Sara reads 4 pages a day for 3 days. How many pages?", "answer": "#### 12"}',
]


def _broken(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(BROKEN_LINES) + "\n")
    return path


EXPECTED_ISSUES = [
    ("line 2", None, "invalid JSON: Expecting ',' delimiter at column 47"),
    ("line 3", "question", "missing"),
    ("line 4", "answer", 'no final "#### N" line'),
    ("line 6", "question", "empty"),
    ("line 7", "question", "expected str, got int"),
    ("line 8", None, "expected a JSON object, got list"),
]


def test_broken_file_fails_with_a_report_and_writes_nothing(tmp_path):
    path = _broken(tmp_path)
    cfg = _cfg(tmp_path, [{"name": "gsm8k", "adapter": "gsm8k", "uri": str(path)}])
    with pytest.raises(PrepError) as info:
        run_prep(cfg)
    report = info.value.report
    assert report["status"] == "failed"
    assert [(e["where"], e["field"], e["reason"]) for e in report["errors"]] == EXPECTED_ISSUES
    assert report["sources"]["gsm8k"] == report["sources"]["gsm8k"] | {"read": 8, "rejected": 6, "kept": 0}
    assert f"{path}, line 3, field question: missing" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_broken_file_skip_quarantines_bad_rows(tmp_path):
    path = _broken(tmp_path)
    cfg = _cfg(tmp_path, [{"name": "gsm8k", "adapter": "gsm8k", "uri": str(path)}], on_bad_row="skip", shuffle=False)
    report = run_prep(cfg)
    assert report["sources"]["gsm8k"] == report["sources"]["gsm8k"] | {"read": 8, "kept": 2, "rejected": 6}
    out = tmp_path / "out"
    kept = _rows(out / "train.parquet")
    assert [r["reward_model"]["ground_truth"] for r in kept] == ["5", "12"]
    assert [r["extra_info"]["index"] for r in kept] == [0, 7]  # position among the file's rows
    quarantine = [json.loads(l) for l in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [(q["where"], q["field"], q["reason"]) for q in quarantine] == EXPECTED_ISSUES
    assert quarantine[0]["row"] == BROKEN_LINES[1]  # undecodable text kept as it was
    assert quarantine[1]["row"] == {"answer": "#### 7"}
    assert json.loads((out / "report.json").read_text())["outputs"] == {"train.parquet": 2, "quarantine.jsonl": 6}


def test_cli_reports_bad_rows_without_traceback(tmp_path):
    path = _broken(tmp_path)
    config = tmp_path / "prep.yaml"
    config.write_text(f"output: {tmp_path / 'out'}\nsources:\n  - {{name: g, adapter: gsm8k, uri: {path}}}\n")
    result = CliRunner().invoke(app, ["data", "prep", str(config), "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 1
    assert "6 bad row(s); nothing written" in result.output
    assert "line 7, field question: expected str, got int" in result.output
    assert "Traceback" not in result.output
    assert json.loads((tmp_path / "r.json").read_text())["errors_total"] == 6
    ok = CliRunner().invoke(app, ["data", "prep", str(config), "--on-bad-row", "skip"])
    assert ok.exit_code == 0, ok.output
    assert "wrote train.parquet: 2 rows" in ok.output


def test_only_the_first_errors_are_listed(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join('{"answer": "1"}\n' for _ in range(25)))
    with pytest.raises(PrepError) as info:
        run_prep(_cfg(tmp_path, [{"name": "m", "adapter": "generic", "uri": str(path)}]))
    assert len(info.value.report["errors"]) == 20 and info.value.report["errors_total"] == 25
    assert str(info.value).endswith("... and 5 more")


def test_config_errors_name_file_and_field(tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - {name: a, uri: x.jsonl, adapter: nope}\n  - {name: b}\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert msg.startswith(f"{bad}: ")
    assert "sources.0.adapter: Value error, unknown adapter 'nope'" in msg
    assert "sources.1: Value error, give exactly one of uri and synthetic" in msg
    result = CliRunner().invoke(app, ["data", "prep", str(bad)])
    assert result.exit_code == 2 and "unknown adapter 'nope'" in result.output
    missing = _cfg(tmp_path, [{"name": "a", "uri": str(tmp_path / "none.jsonl")}])
    with pytest.raises(PrepError, match=r"source a: .*none.jsonl: no such file"):
        run_prep(missing)
    (tmp_path / "folder").mkdir()
    with pytest.raises(PrepError, match=r"source a: .*folder: not a dataset saved with save_to_disk"):
        run_prep(_cfg(tmp_path, [{"name": "a", "uri": str(tmp_path / "folder")}]))
    # a generator with 5 distinct problems cannot give 50
    monkeypatch.setitem(TASKS, "arithmetic", lambda rng, d: Problem("math", f"What is {rng.randint(1, 5)} + 0?", "1"))
    too_many = _cfg(tmp_path, [{"name": "s", "synthetic": {"task": "arithmetic", "n": 50}}])
    with pytest.raises(PrepError, match=r"source s: synthetic task 'arithmetic' at difficulty 1 ran out"):
        run_prep(too_many)


def test_refuses_to_publish_over_a_foreign_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    cfg = _cfg(tmp_path, [{"name": "c", "synthetic": {"task": "code", "n": 3}}])
    with pytest.raises(PrepError, match="not a data prep output"):
        run_prep(cfg)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------
# dedup and decontamination
# --------------------------------------------------------------------------------------------

LONG = "a train leaves the station at noon going sixty miles per hour toward the city while another"


def test_ngrams_and_contamination_index():
    assert ngrams("A b  C d", 3) == {"a b c", "b c d"}
    assert normalise("  What IS\n2+2? ") == "what is 2+2?"
    index = ContaminationIndex([LONG, "Short eval prompt"], n=13, boilerplate=3)
    assert index.contaminated("Question: " + " ".join(LONG.split()[:13]).upper())  # one shared 13-gram
    assert not index.contaminated(" ".join(LONG.split()[:12]) + " x")  # only 12 tokens shared
    assert index.contaminated("short  EVAL prompt")  # too short for a 13-gram: exact match after normalising
    shared = " ".join(f"w{i}" for i in range(13))
    boiler = ContaminationIndex([f"p{i} {shared}" for i in range(3)], n=13, boilerplate=3)
    assert boiler.boilerplate == [shared] and not boiler.contaminated(f"x {shared}")


def test_dedup_and_decontamination_counts(tmp_path):
    rows = [
        {"q": "What is 1 + 1?", "a": 2},
        {"q": "what  is 1 + 1?", "a": 2},  # duplicate after normalising
        {"q": f"{LONG} one. How far?", "a": 1.5},  # shares a 13-gram with the eval row
        {"q": "What is 3 + 4?", "a": 7.0},
    ]
    other = [{"q": "WHAT IS 3 + 4?", "a": 7}]  # duplicate of a row of the first source
    evals = [{"q": f"Puzzle: {LONG} two.", "a": 3}]
    paths = {}
    for name, data in (("a", rows), ("b", other), ("e", evals)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    fields = {"problem": "q", "answer": "a"}
    sources = [
        {"name": "a", "uri": str(paths["a"]), "fields": fields},
        {"name": "b", "uri": str(paths["b"]), "fields": fields},
        {"name": "e", "role": "eval", "uri": str(paths["e"]), "fields": fields},
    ]
    report = run_prep(_cfg(tmp_path, sources, shuffle=False))
    assert report["sources"]["a"] == report["sources"]["a"] | {"read": 4, "kept": 2, "duplicate": 1, "contaminated": 1}
    assert report["sources"]["b"] == report["sources"]["b"] | {"read": 1, "kept": 0, "duplicate": 1}
    assert report["sources"]["e"] == report["sources"]["e"] | {"read": 1, "kept": 1}
    train = _rows(tmp_path / "out" / "train.parquet")
    assert [r["reward_model"]["ground_truth"] for r in train] == ["2", "7"]
    assert len(_rows(tmp_path / "out" / "eval.parquet")) == 1
    off = _cfg(tmp_path, sources, dedup=False, decontaminate=False, output=str(tmp_path / "off"))
    assert run_prep(off)["totals"]["kept"] == 6


# --------------------------------------------------------------------------------------------
# generic sources: JSON, parquet, HF datasets, s3, synthetic
# --------------------------------------------------------------------------------------------


def test_generic_parquet_code_source_and_hf_disk(tmp_path):
    from datasets import Dataset, DatasetDict

    tests = [{"type": "stdin", "input": "1 2\n", "output": "3\n"}]
    table = pa.Table.from_pylist([
        {"meta": {"text": "Add two numbers."}, "cases": json.dumps(tests), "origin": "x"},
        {"meta": {"text": "Broken tests."}, "cases": '[{"type": "stdin", "input": "1"}]', "origin": "y"},
    ])
    pq.write_table(table, tmp_path / "code.parquet")
    fields = {"ability": "code", "problem": "meta.text", "tests": "cases", "keep": ["origin"]}
    with pytest.raises(PrepError) as info:
        run_prep(_cfg(tmp_path, [{"name": "c", "uri": str(tmp_path / "code.parquet"), "fields": fields}]))
    (issue,) = info.value.report["errors"]
    assert (issue["where"], issue["field"], issue["reason"]) == ("row 1", "cases", "test case 0: stdin.output: Field required")

    DatasetDict({
        "train": Dataset.from_list([{"problem": "What is 6 * 7?", "answer": "42"}]),
        "test": Dataset.from_list([{"problem": "What is 5 * 5?", "answer": "25"}]),
    }).save_to_disk(str(tmp_path / "hf"))
    sources = [
        {"name": "c", "uri": str(tmp_path / "code.parquet"), "fields": fields, "on_bad_row": "skip"},
        {"name": "h", "uri": str(tmp_path / "hf"), "hf_split": "test"},
    ]
    report = run_prep(_cfg(tmp_path, sources, shuffle=False, jsonl=True))
    rows = _rows(tmp_path / "out" / "train.parquet")
    assert [r["ability"] for r in rows] == ["code", "math"]
    assert json.loads(rows[0]["extra_info"]["tests"]) == tests and rows[0]["extra_info"]["origin"] == "x"
    assert rows[0]["reward_model"]["ground_truth"] == rows[0]["extra_info"]["tests"]
    assert rows[1]["reward_model"]["ground_truth"] == "25"
    assert rows[1]["extra_info"].pop("origin") is None  # parquet gives every row the union of extra_info keys
    assert [json.loads(l) for l in (tmp_path / "out" / "train.jsonl").read_text().splitlines()] == rows
    assert report["sources"]["c"]["rejected"] == 1
    no_split = _cfg(tmp_path, [{"name": "h", "uri": str(tmp_path / "hf")}], output=str(tmp_path / "o2"))
    with pytest.raises(PrepError, match=r"set hf_split to one of \['test', 'train'\]"):
        run_prep(no_split)


def test_synthetic_sources_and_template_from_config(tmp_path):
    template = {"system": None, "math": "Solve: {problem}\nAnswer in \\boxed{}.", "code": "Code: {problem}"}
    sources = [
        {"name": "cd", "synthetic": {"task": "countdown", "n": 30, "seed": 0}, "decontaminate": False},
        {"name": "cd-test", "data_source": "synthetic/countdown", "role": "eval", "synthetic": {"task": "countdown", "n": 10, "seed": 0}},
    ]
    report = run_prep(_cfg(tmp_path, sources, template=template, eval_layout="per_source"))
    assert report["template"]["math"] == template["math"]
    train = _rows(tmp_path / "out" / "train.parquet")
    ev = _rows(tmp_path / "out" / "eval" / "cd-test.parquet")
    assert len(train) == 30 and len(ev) == 10
    assert {r["data_source"] for r in ev} == {"synthetic/countdown"}
    assert all(len(r["prompt"]) == 1 and r["prompt"][0]["content"].startswith("Solve: Use the numbers") for r in train)
    assert {r["prompt"][0]["content"] for r in train}.isdisjoint(r["prompt"][0]["content"] for r in ev)


def test_a_models_chat_template_that_refuses_a_row_makes_it_a_bad_row(tiny, tmp_path):
    from lad.modeling import save_model

    model, tok = tiny
    # a template in the style of models without a system role (Gemma's raises on one)
    tok = type(tok)(tokenizer_object=tok.backend_tokenizer, eos_token=tok.eos_token, pad_token=tok.pad_token, chat_template=(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"))
    ckpt = tmp_path / "no-system"
    save_model(model, tok, ckpt, {"name": "no-system-role"})
    sources = [{"name": "cd", "synthetic": {"task": "countdown", "n": 3, "seed": 0}, "decontaminate": False}]
    with pytest.raises(PrepError) as info:
        run_prep(_cfg(tmp_path, sources, model=str(ckpt)))
    assert [(e["where"], e["field"], e["reason"]) for e in info.value.report["errors"]] == [
        (f"row {i}", "prompt", f"the chat template of {ckpt} refuses these messages: System role not supported") for i in range(3)]
    report = run_prep(_cfg(tmp_path, sources, model=str(ckpt), template={"system": None}))
    assert report["model_prompts"]["first_prompt"].startswith("<|im_start|>user\nUse the numbers")
    assert report["model_prompts"]["first_prompt"].endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert report["sources"]["cd"]["prompt_tokens"]["rows"] == 3


def test_model_settings_of_data_prep_are_checked(tmp_path):
    sources = [{"name": "cd", "synthetic": {"task": "countdown", "n": 3}}]
    with pytest.raises(ValueError, match="max_prompt_tokens counts the tokens of a model: set model too"):
        _cfg(tmp_path, sources, max_prompt_tokens=64)
    with pytest.raises(ValueError, match="model 'tiny:3m': unknown tiny preset"):
        _cfg(tmp_path, sources, model="tiny:3m")
    with pytest.raises(PrepError, match=f"^model: model '{tmp_path / 'none'}': no such directory or .gguf file"):
        run_prep(_cfg(tmp_path, sources, model=str(tmp_path / "none")))
    assert not (tmp_path / "out").exists()


def test_s3_source_and_output(s3, tmp_path, monkeypatch):
    from datasets import Dataset

    monkeypatch.setenv("LAD_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "amc.jsonl"
    src.write_text('{"problem": "What is 3 * 9?", "answer": 27.0, "url": "u"}\n')
    storage.put_file(src, f"{s3.root}/raw/amc.jsonl")
    Dataset.from_list([{"problem": "What is 8 - 5?", "answer": "3"}]).save_to_disk(str(tmp_path / "hf"))
    storage.put_dir(tmp_path / "hf", f"{s3.root}/raw/hf")
    sources = [
        {"name": "amc", "role": "eval", "adapter": "amc22_23", "uri": f"{s3.root}/raw/amc.jsonl"},
        {"name": "hf", "uri": f"{s3.root}/raw/hf"},
    ]
    report = run_prep(_cfg(tmp_path, sources, output=f"{s3.root}/prepped"))
    assert report["outputs"] == {"train.parquet": 1, "eval.parquet": 1}
    local = storage.get_dir(f"{s3.root}/prepped", tmp_path / "back")
    assert _rows(local / "eval.parquet")[0]["reward_model"]["ground_truth"] == "27"
    assert _rows(local / "train.parquet")[0]["reward_model"]["ground_truth"] == "3"
    assert json.loads((local / "report.json").read_text())["sources"]["hf"]["kept"] == 1
    missing = _cfg(tmp_path, [{"name": "x", "uri": f"{s3.root}/raw/none.jsonl"}], output=str(tmp_path / "o"))
    with pytest.raises(PrepError, match=r"source x: .*none.jsonl"):
        run_prep(missing)


def test_unreachable_hub_name_is_a_clear_error(tmp_path):
    import os
    import subprocess
    import sys

    config = tmp_path / "hub.yaml"
    config.write_text(f"output: {tmp_path / 'out'}\nsources:\n  - {{name: h, uri: nobody/no-such-set, hf_split: test}}\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "lad.cli", "data", "prep", str(config)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1
    assert "source h: nobody/no-such-set: no such local file or folder, and could not load it from the Hugging Face hub" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_source_that_cannot_be_read_takes_its_fallback_and_the_report_says_why(tmp_path):
    import os
    import subprocess
    import sys

    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), "sources": [
        {"name": "dapo", "role": "train", "uri": "hf://datasets/nobody/no-such-set:train", "fields": {"problem": "prompt.0.content"},
         "fallback": {"uri": "lad://aime24.jsonl", "adapter": "aime24"}}]}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "lad.cli", "data", "prep", str(config)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    source = report["sources"]["dapo"]
    assert (source["uri"], source["adapter"], source["kept"]) == ("lad://aime24.jsonl", "aime24", 30)
    assert source["fallback_reason"].startswith("hf://datasets/nobody/no-such-set:train: could not load dataset from the Hugging Face hub")
    rows = _rows(tmp_path / "out" / "train.parquet")
    assert {r["data_source"] for r in rows} == {"dapo"}  # the source's own name: rewards dispatch the same way


@pytest.mark.parametrize(
    "adapter,row,field,reason",
    [
        ("amc23", {"problem": "p", "answer": True, "url": "u"}, "answer", "expected int or float, got bool"),
        ("amc23", {"problem": "p", "answer": float("nan"), "url": "u"}, "answer", "not a finite number: nan"),
        ("olympiadbench", {"question": "q", "final_answer": [], "id": 1}, "final_answer", "expected a non-empty list of non-empty strings"),
        ("minerva_math", {"problem": "p", "answer": "9.6"}, "answer", "expected list, got str"),
        ("codecontests", {"problem": "p", "tests": {"inputs": ["1"], "outputs": []}}, "tests", "1 inputs but 0 outputs"),
        ("livecodebench", {"problem": "p", "starter_code": "", "tests": [{"input": "1", "output": "2", "testtype": "x"}]},
         "tests[0].testtype", "expected 'stdin', 'stdin_stdout' or 'functional', got 'x'"),
        ("livecodebench", {"problem": "p", "starter_code": "", "tests": [{"input": "1", "output": "2", "testtype": "functional"}]},
         "starter_code", "functional tests need a class with a method in the starter code, or a function name"),
        ("deepcoder", {"problem": "p", "tests": '{"inputs": [[1]], "outputs": [[2]], "fn_name": "f"}'},
         "tests.fn_name", "TACO function-call tests are not supported (stdin tests only)"),
        ("deepcoder", {"problem": "p", "tests": "[{"}, "tests", "not JSON: Expecting property name enclosed in double quotes: line 1 column 3 (char 2)"),
        ("deepcoder", {"problem": "p", "tests": '[{"input": "[1]", "output": "[2]", "type": "function_call", "fn_name": "f"}]'},
         "tests[0].type", "'function_call' tests are not supported (stdin tests only)"),
        ("deepcoder", {"problem": "p", "tests": '[{"input": "[1]", "output": "2", "testtype": "functional"}]'},
         "starter_code", "functional tests need a class with a method in the starter code, or a function name"),
        ("humanevalplus", {"task_id": "t", "prompt": "def f(x):\n", "entry_point": "f", "canonical_solution": "  return x\n",
                           "atol": 0, "base_input": [1], "plus_input": []}, "base_input[0]", "expected a list of arguments, got int"),
        ("mbppplus", {"task_id": "Mbpp/2", "prompt": "p", "entry_point": "f", "canonical_solution": "c", "atol": 0,
                      "base_input": [[[1], [2]]], "plus_input": {"a": 1}},
         "plus_input", "expected a list of argument lists (or an empty object), got a non-empty object"),
        ("mbppplus", {"task_id": "Mbpp/2", "prompt": "p", "entry_point": "f", "canonical_solution": "c", "atol": 0,
                      "base_input": [[1, 2]], "plus_input": []},
         "base_input", "inputs of Mbpp/2 are not in the form EvalPlus rebuilds: 'int' object is not iterable"),
        ("mbppplus", {"task_id": "HumanEval/2", "prompt": "p", "entry_point": "f", "canonical_solution": "c", "atol": 0,
                      "base_input": [[1]], "plus_input": []},
         "task_id", "expected an MBPP+ task id such as 'Mbpp/2', got 'HumanEval/2'"),
        ("generic", {"problem": "p"}, "answer", "missing"),
    ],
)
def test_adapter_errors_name_the_field(adapter, row, field, reason):
    from lad.data.adapters import ADAPTERS, FieldMap, RowError

    with pytest.raises(RowError) as info:
        ADAPTERS[adapter](row, FieldMap())
    assert (info.value.field, info.value.reason) == (field, reason)


def test_mbppplus_rows_rebuild_inputs_as_evalplus_and_carry_its_oracles():
    from lad.data.adapters import ADAPTERS, FieldMap
    from lad.sandbox.runner import decode

    rows = {row["task_id"]: row for row in map(json.loads, read_text("mbppplus.jsonl").splitlines())}
    p = ADAPTERS["mbppplus"](rows["Mbpp/2"], FieldMap())
    assert (p.problem, p.starter_code, p.entry_point, p.test_type) == (rows["Mbpp/2"]["prompt"], None, "similar_elements", "reference")
    assert p.reference_solution == rows["Mbpp/2"]["prompt"] + rows["Mbpp/2"]["canonical_solution"]
    assert p.tests[0] == {"type": "call", "entry_point": "similar_elements", "expected": None, "atol": 0.0, "compare": "set",
                          "args": [{"__tuple__": [3, 4, 5, 6]}, {"__tuple__": [5, 7, 4, 10]}]}
    assert p.extra == {"source_id": "Mbpp/2", "base_tests": 3} and len(p.tests) == 3 + len(rows["Mbpp/2"]["plus_input"])

    def first_args(task_id: str) -> list:
        return decode(ADAPTERS["mbppplus"](rows[task_id], FieldMap()).tests[0]["args"])

    # the stored JSON and what the function receives, one task of each kind of rebuilding
    assert first_args("Mbpp/63") == [[(3, 5), (1, 7), (10, 3), (1, 2)]]
    assert first_args("Mbpp/75") == [[(6, 24, 12), (7, 9, 6), (12, 18, 21)], 6]
    assert first_args("Mbpp/124") == [0.0, 1j] and rows["Mbpp/124"]["base_input"][0] == ["0", "1j"]
    assert first_args("Mbpp/252") == [1 + 0j]
    assert first_args("Mbpp/259") == [((1, 3), (4, 5), (2, 9), (1, 10)), ((6, 7), (3, 9), (1, 1), (7, 3))]
    assert first_args("Mbpp/278") == [(1, 5, 7, (4, 6), 10)]
    assert first_args("Mbpp/580") == [(4, 5, (7, 6, (2, 4)), 6, 8)]
    assert first_args("Mbpp/722")[0]["Cierra Vega"] == (6.2, 70)
    assert [type(a) for a in first_args("Mbpp/750")] == [list, tuple]
    # JSON's -Infinity, tagged for the sandbox (the test list is strict JSON)
    tests = ADAPTERS["mbppplus"](rows["Mbpp/404"], FieldMap()).tests
    assert [-math.inf, math.inf] in [decode(t["args"]) for t in tests]
    assert {"type": "call", "entry_point": "minimum", "args": [{"__float__": "-inf"}, {"__float__": "inf"}],
            "expected": None, "atol": 0.0} in tests
    # special oracles: not-None verdicts, and the other reading of two statements
    assert ADAPTERS["mbppplus"](rows["Mbpp/737"], FieldMap()).tests[0]["compare"] == "not_none"
    surface = ADAPTERS["mbppplus"](rows["Mbpp/581"], FieldMap()).tests[0]
    assert (surface["args"], surface["alternatives"]) == ([3, 4], [round(9 + 2 * 3 * math.sqrt(1.5 ** 2 + 16))])
    digits = ADAPTERS["mbppplus"](rows["Mbpp/558"], FieldMap()).tests
    assert [(t["args"], t["alternatives"]) for t in digits[:3]] == [([1, 2], [1]), ([23, 56], [6]), ([123, 256], [7])]
    padded = next(t for t in digits if t["args"] == [12345, 9])  # 12345 against 00009
    assert padded["alternatives"] == [1 + 2 + 3 + 4 + 4]
    # Mbpp/793's plus_input is {} (no inputs); Mbpp/255 leaves out the 5 inputs of OMITTED
    assert len(ADAPTERS["mbppplus"](rows["Mbpp/793"], FieldMap()).tests) == len(rows["Mbpp/793"]["base_input"])
    assert len(ADAPTERS["mbppplus"](rows["Mbpp/255"], FieldMap()).tests) == 112 - 5


def test_olympiadbench_context_and_multiple_answers():
    from lad.data.adapters import ADAPTERS, FieldMap

    row = {"id": 7, "question": "Find all x.", "context": "Let x be real.", "final_answer": ["$x=1$", "$x=2$"],
           "is_multiple_answer": True, "unit": "$cm$", "answer_type": "Expression"}
    p = ADAPTERS["olympiadbench"](row, FieldMap())
    assert (p.problem, p.ground_truth) == ("Let x be real.\n\nFind all x.", "x=1, x=2")
    assert p.extra == {"unit": "cm", "answer_type": "Expression", "is_multiple_answer": "true", "source_id": "7"}


def test_deepcoder_rows_in_each_of_its_test_layouts():
    from lad.data.adapters import ADAPTERS, FieldMap

    adapt = ADAPTERS["deepcoder"]
    # primeintellect / lcbv5: a JSON list of LiveCodeBench-style tests; the function name in a test's metadata
    p = adapt({"problem": "Add them.", "tests": json.dumps([
        {"input": "1\n2", "output": "3", "testtype": "functional", "metadata": {"func_name": "add"}},
        {"input": "5\n-5", "output": "0", "testtype": "functional", "metadata": {"func_name": "add"}}])}, FieldMap())
    assert (p.entry_point, p.test_type, p.starter_code) == ("add", "call", None)
    assert p.tests == [{"type": "call", "entry_point": "add", "args": [1, 2], "expected": 3, "atol": 0.0},
                       {"type": "call", "entry_point": "add", "args": [5, -5], "expected": 0, "atol": 0.0}]
    # or in the row's metadata (JSON text); a starter class decides the entry point
    p = adapt({"problem": "p", "starter_code": "class Solution:\n    def add(self, a, b):\n", "metadata": '{"func_name": "x"}',
               "tests": [{"input": "1\n2", "output": "3", "testtype": "functional"}]}, FieldMap())
    assert p.entry_point == "Solution.add" and p.starter_code.startswith("class Solution")
    # stdin_stdout, and TACO's {inputs, outputs}
    p = adapt({"problem": "p", "tests": '[{"input": "1 2\\n", "output": "3\\n", "testtype": "stdin_stdout"}]'}, FieldMap())
    assert p.tests == [{"type": "stdin", "input": "1 2\n", "output": "3\n"}] and p.test_type == "stdin"
    p = adapt({"problem": "p", "tests": '{"inputs": ["1\\n", "2\\n"], "outputs": ["2\\n", "4\\n"]}'}, FieldMap())
    assert p.tests == [{"type": "stdin", "input": "1\n", "output": "2\n"}, {"type": "stdin", "input": "2\n", "output": "4\n"}]
    # PrimeIntellect's list, as Python-literal text
    p = adapt({"problem": "p", "tests": "[{'input': '3\\n', 'output': '9\\n', 'type': 'stdin_stdout'}]"}, FieldMap())
    assert p.tests == [{"type": "stdin", "input": "3\n", "output": "9\n"}]


def test_a_generic_path_indexes_lists():
    from lad.data.adapters import ADAPTERS, FieldMap

    row = {"prompt": [{"role": "user", "content": "What is 6 x 7?"}], "reward_model": {"ground_truth": "42"}}
    p = ADAPTERS["generic"](row, FieldMap(problem="prompt.0.content", answer="reward_model.ground_truth"))
    assert (p.problem, p.ground_truth) == ("What is 6 x 7?", "42")
    with pytest.raises(Exception, match="missing"):
        ADAPTERS["generic"](row, FieldMap(problem="prompt.1.content", answer="reward_model.ground_truth"))


def test_deepcoder_rows_become_records_the_sandbox_runs(tmp_path):
    from lad.sandbox.client import SandboxClient

    rows = [
        {"problem": "Print the sum of two numbers.", "tests": json.dumps([
            {"input": "1 2\n", "output": "3\n", "testtype": "stdin"}, {"input": "5 5\n", "output": "10\n", "testtype": "stdin"}])},
        {"problem": "Return twice x.", "starter_code": "class Solution:\n    def twice(self, x):\n",
         "tests": json.dumps([{"input": "4", "output": "8", "testtype": "functional", "metadata": {"func_name": "twice"}}])},
        {"problem": "Echo the line.", "tests": json.dumps({"inputs": ["hi\n"], "outputs": ["hi\n"]})},
        {"problem": "Call f.", "tests": json.dumps({"inputs": [[1]], "outputs": [[1]], "fn_name": "f"})},  # quarantined
    ]
    src = tmp_path / "deepcoder.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run_prep(_cfg(tmp_path, [{"name": "deepcoder", "role": "train", "adapter": "deepcoder", "uri": str(src),
                                       "on_bad_row": "skip", "decontaminate": False}], shuffle=False))
    assert (report["sources"]["deepcoder"]["kept"], report["sources"]["deepcoder"]["rejected"]) == (3, 1)
    records = _rows(tmp_path / "out" / "train.parquet")
    assert [r["extra_info"]["test_type"] for r in records] == ["stdin", "call", "stdin"]
    solutions = ["a, b = map(int, input().split())\nprint(a + b)\n",
                 "class Solution:\n    def twice(self, x):\n        return 2 * x\n", "print(input())\n"]
    from lad.rewards.code import assemble_program, method_shim, record_tests

    with SandboxClient() as sandbox:
        for record, solution in zip(records, solutions):
            code, tests = method_shim(assemble_program(solution, record["extra_info"]), record_tests(record))
            result = sandbox.evaluate(code, tests)
            assert (result.passed, result.total) == (len(tests), len(tests)), (record["prompt"], result)
