"""Code rewards: the response's last fenced code block run against the record's tests in the sandbox.

ground_truth of a code record is the JSON list of its tests (the sandbox's test models). The
reward is the fraction of tests passed, or 1.0 only when all pass (``mode="all_pass"``). A
response without a code block scores 0 ("no_code"); a sandbox failure scores 0 with its reason
and never stops training.
"""

from __future__ import annotations

import json
from typing import Literal, Optional

from lad.rewards.extract import last_code_block
from lad.rewards.math import Score

CODE_MODES = ("fraction", "all_pass")


def code_score(passed: int, total: int, status: str, mode: Literal["fraction", "all_pass"]) -> Score:
    """One program's reward from its sandbox verdicts."""
    if mode not in CODE_MODES:
        raise ValueError(f"unknown code reward mode {mode!r}; expected one of {list(CODE_MODES)}")
    if status != "ok":
        return Score(0.0, status)
    if total == 0:
        return Score(0.0, "no_tests")
    if mode == "all_pass":
        return Score(1.0 if passed == total else 0.0, "correct" if passed == total else f"passed_{passed}_of_{total}")
    return Score(passed / total, "correct" if passed == total else f"passed_{passed}_of_{total}")


def score_code(responses: list[str], records: list[dict], *, mode: Literal["fraction", "all_pass"] = "fraction",
               client=None) -> list[Score]:
    """Score code responses against their records' tests; ``client`` is a SandboxClient (None: a local one)."""
    from lad.sandbox.client import SandboxClient, SandboxRequestError

    if len(responses) != len(records):
        raise ValueError(f"{len(responses)} responses for {len(records)} records")
    if mode not in CODE_MODES:
        raise ValueError(f"unknown code reward mode {mode!r}; expected one of {list(CODE_MODES)}")
    scores: list[Optional[Score]] = [None] * len(responses)
    programs = []
    for i, (response, record) in enumerate(zip(responses, records)):
        code = last_code_block(response)
        if code is None:
            scores[i] = Score(0.0, "no_code")
            continue
        try:
            tests = json.loads(record["reward_model"]["ground_truth"])
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"code record {record.get('extra_info', {}).get('index')!r}: reward_model.ground_truth must be a JSON list of tests ({err})") from None
        programs.append((i, code, tests))
    if programs:
        own = client is None
        client = client or SandboxClient()
        try:
            if client.url:
                results = client.evaluate_many([(code, tests) for _, code, tests in programs])
            else:
                # The in-process executor is not thread-safe: one program at a time.
                results = [client.evaluate(code, tests) for _, code, tests in programs]
            for (i, code, _), r in zip(programs, results):
                verdict = code_score(r.passed, r.total, r.status, mode)
                scores[i] = Score(verdict.value, verdict.reason, code)
        except SandboxRequestError as err:
            for i, code, _ in programs:
                if scores[i] is None:
                    scores[i] = Score(0.0, f"sandbox_error: {err.status_code}", code)
        finally:
            if own:
                client.close()
    return scores
