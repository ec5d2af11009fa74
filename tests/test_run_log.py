"""The training stages' run logger: the step log (cut back on resume), whole files, and nothing at all on ranks other than 0."""

import json

from lad.train.run_log import RunLogger


def _logger(out, **kw):
    return RunLogger(None, out, name="r", stage="rl", config=None, total=4, desc="t", **kw)


def test_step_log_files_and_resume_cut_back(tmp_path):
    out = tmp_path / "run"
    with _logger(out, rank=0) as log:
        for step in (1, 2, 3):
            log.step(step, {"reward/mean": step / 10}, postfix={"reward": "x"}, last=step == 3)
        log.write_json("eval/step_00000003.json", {"b": 1, "a": [1]})
        log.write_jsonl("samples/step_00000003.jsonl", [{"i": 0}, {"i": 1}])
        assert log.run_id is None and log.fresh
    assert [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()] == [
        {"step": 1, "reward/mean": 0.1}, {"step": 2, "reward/mean": 0.2}, {"step": 3, "reward/mean": 0.3}]
    assert (out / "eval" / "step_00000003.json").read_text() == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}'
    assert (out / "samples" / "step_00000003.jsonl").read_text() == '{"i": 0}\n{"i": 1}\n'
    # a run killed after step 3 resumes from its checkpoint at step 2: step 3 is redone, logged once
    with _logger(out, rank=0, initial=2, run_id="abc") as log:
        assert not log.fresh
        log.step(3, {"reward/mean": 0.35}, postfix={}, last=False)
    assert [json.loads(x)["reward/mean"] for x in (out / "steps.jsonl").read_text().splitlines()] == [0.1, 0.2, 0.35]


def test_other_ranks_write_nothing(tmp_path):
    out = tmp_path / "run"
    with _logger(out, rank=1) as log:
        log.step(1, {"m": 1.0}, postfix={}, last=True)
        log.write_json("metrics.json", {"m": 1})
    assert not out.exists()
