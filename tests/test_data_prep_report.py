"""What data prep says about the rows it drops or refuses: duplicates by file and line with the
row they repeat, a nested field whose parent is no object, and the per-source answer fallback it
hands to the reward."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from lad.data.adapters import ADAPTERS, FieldMap, RowError
from lad.data.config import PrepConfig
from lad.data.prep import PrepError, run_prep


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_duplicates_are_named_with_the_row_they_repeat(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"q": "What is 1 + 1?", "a": 2}, {"q": "What is 2 + 2?", "a": 4},
                                      {"q": "what  is 1 + 1?", "a": 2}])
    b = _jsonl(tmp_path / "b.jsonl", [{"q": "WHAT IS 2 + 2?", "a": 4}, {"q": "What is 5 + 5?", "a": 10}])
    fields = {"problem": "q", "answer": "a"}
    cfg = PrepConfig.model_validate({"output": str(tmp_path / "out"), "shuffle": False, "sources": [
        {"name": "a", "uri": a, "fields": fields}, {"name": "b", "uri": b, "fields": fields}]})
    report = run_prep(cfg)
    assert report["duplicates_total"] == 2
    assert [d["message"] for d in report["duplicates"]] == [f"{a}, line 3: duplicate of {a}, line 1",
                                                            f"{b}, line 1: duplicate of {a}, line 2"]
    assert {k: v for k, v in report["duplicates"][1].items() if k != "message"} == {
        "source": "b", "file": b, "where": "line 1", "first_source": "a", "first_file": a, "first_where": "line 2"}
    assert (report["sources"]["a"]["duplicate"], report["sources"]["b"]["duplicate"]) == (1, 1)
    few = run_prep(cfg.model_copy(update={"output": str(tmp_path / "few"), "show_errors": 1}))
    assert (len(few["duplicates"]), few["duplicates_total"]) == (1, 2)


@pytest.mark.parametrize("row,reason", [
    ({"problem": "p", "meta": 5}, "meta is int 5, not an object"),
    ({"problem": "p", "meta": {"inner": ["x"]}}, "meta.inner is list ['x'], not an object"),
    ({"problem": "p", "meta": "a long text " * 10}, "meta is str 'a long text a long text a long text a l..., not an object"),
])
def test_a_nested_field_under_a_non_object_says_so(row, reason):
    field = "meta.inner.final" if isinstance(row["meta"], dict) else "meta.final"
    with pytest.raises(RowError) as info:
        ADAPTERS["generic"](row, FieldMap(answer=field))
    assert (info.value.field, info.value.reason) == (field, reason)
    # absent, or null on the way: missing, as before
    for absent in ({"problem": "p"}, {"problem": "p", "meta": None}):
        with pytest.raises(RowError) as info:
            ADAPTERS["generic"](absent, FieldMap(answer="meta.final"))
        assert (info.value.field, info.value.reason) == ("meta.final", "missing")


def test_non_object_parent_is_reported_by_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [{"q": "p", "meta": {"final": 3}}, {"q": "p2", "meta": 5}])
    cfg = PrepConfig.model_validate({"output": str(tmp_path / "out"), "sources": [
        {"name": "m", "uri": path, "fields": {"problem": "q", "answer": "meta.final"}}]})
    with pytest.raises(PrepError) as info:
        run_prep(cfg)
    assert str(info.value).splitlines()[1] == f"  {path}, line 2, field meta.final: meta is int 5, not an object"


def test_answer_fallback_reaches_the_math_rows(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [{"q": "What is 1 + 1?", "a": 2}])
    sources = [{"name": "with", "uri": path, "fields": {"problem": "q", "answer": "a"},
                "answer_fallback": "The answer is (.+)"},
               {"name": "without", "role": "eval", "uri": path, "fields": {"problem": "q", "answer": "a"}}]
    cfg = PrepConfig.model_validate({"output": str(tmp_path / "out"), "decontaminate": False, "sources": sources})
    run_prep(cfg)
    train = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    evals = pq.read_table(tmp_path / "out" / "eval.parquet").to_pylist()
    assert train[0]["extra_info"]["answer_fallback"] == "The answer is (.+)"
    assert "answer_fallback" not in evals[0]["extra_info"]
