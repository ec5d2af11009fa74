"""The HTTP layer: auth, 413, 422 naming the field, 429 with Retry-After and the client's retries,
metrics, and `lad sandbox serve` refusing to start without bubblewrap."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess

import httpx
import pytest

from sandbox_paths import LAD
from lad.sandbox.client import AsyncSandboxClient, SandboxRequestError, split_by_size
from lad.sandbox.config import SandboxConfig
from lad.sandbox.executor import Executor
from lad.sandbox.service import ServiceConfig, create_app

TOKEN = "unit-token"


@pytest.fixture(scope="module")
def executor():
    with Executor(SandboxConfig()) as ex:
        yield ex


def _app(executor, **kw):
    return create_app(ServiceConfig(token=TOKEN, **kw), executor=executor)


def _client(app, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox", headers=headers)


def test_token_is_required_except_for_healthz(executor):
    app = _app(executor)

    async def go():
        async with _client(app, token=None) as anon, _client(app, token="wrong") as wrong, _client(app) as good:
            return (await anon.post("/v1/run", json={"code": "print(1)"}),
                    await wrong.post("/v1/run", json={"code": "print(1)"}),
                    await anon.get("/metrics"), await anon.get("/healthz"),
                    await good.post("/v1/run", json={"code": "print(1)"}))

    anon, wrong, metrics, health, good = asyncio.run(go())
    assert (anon.status_code, wrong.status_code, metrics.status_code) == (401, 401, 401)
    assert anon.headers["www-authenticate"] == "Bearer"
    assert health.status_code == 200 and health.json()["isolation"] == "bwrap"
    assert good.status_code == 200 and good.json()["stdout"] == "1\n"


def test_oversized_and_malformed_requests(executor):
    app = _app(executor, max_body_bytes=10_000)

    async def go():
        async with _client(app) as c:
            return (await c.post("/v1/run", json={"code": "x" * 20_000}),
                    await c.post("/v1/evaluate", json={"code": "pass", "tests": [{"type": "stdin", "input": "1"}]}),
                    await c.post("/v1/evaluate", json={"code": "pass", "tests": [{"type": "sql"}]}),
                    await c.post("/v1/run", json={"code": "pass", "timeout_s": -1}),
                    await c.post("/v1/run", json={"code": "pass", "timeout_s": 1000}),
                    await c.post("/v1/run", json={"cod": "pass"}),
                    await c.post("/v1/run", content=b"{not json", headers={"content-type": "application/json"}))

    big, no_output, bad_type, negative, too_long, typo, not_json = asyncio.run(go())
    assert big.status_code == 413 and "exceeds the limit of 10000 bytes" in big.json()["detail"]
    assert no_output.status_code == 422 and "tests.0.stdin.output: Field required" in no_output.json()["detail"]
    assert bad_type.status_code == 422 and "tests.0" in bad_type.json()["detail"]
    assert negative.status_code == 422 and "timeout_s: Input should be greater than 0" in negative.json()["detail"]
    assert too_long.status_code == 422 and too_long.json()["detail"] == \
        "timeout_s: 1000.0 exceeds this service's maximum of 60.0"
    assert typo.status_code == 422 and "code: Field required" in typo.json()["detail"]
    assert "cod: Extra inputs are not permitted" in typo.json()["detail"]
    assert not_json.status_code == 422


def test_full_queue_answers_429_and_the_client_retries(executor):
    app = _app(executor, workers=1, queue=0, retry_after_s=1)
    slow = {"code": "import time; time.sleep(1.0); print('done')"}

    async def raw():
        async with _client(app) as c:
            first = asyncio.create_task(c.post("/v1/run", json=slow))
            await asyncio.sleep(0.3)
            second = await c.post("/v1/run", json=slow)
            return await first, second

    first, second = asyncio.run(raw())
    assert first.status_code == 200 and first.json()["stdout"] == "done\n"
    assert second.status_code == 429 and second.headers["retry-after"] == "1"

    async def with_retries(retries):
        async with AsyncSandboxClient("http://sandbox", token=TOKEN, retries=retries, backoff_s=0.1,
                                      transport=httpx.ASGITransport(app=app), concurrency=3) as c:
            return await c.evaluate_many([("import time\ndef f():\n    time.sleep(0.5)\n    return 1\n",
                                           [{"type": "call", "entry_point": "f", "args": [], "expected": 1}])] * 3)

    results = asyncio.run(with_retries(5))
    assert [r.passed for r in results] == [1, 1, 1]
    with pytest.raises(SandboxRequestError, match="429"):
        asyncio.run(with_retries(0))


def test_metrics_count_requests_verdicts_and_latency(executor):
    app = _app(executor)

    async def go():
        async with _client(app) as c:
            await c.post("/v1/evaluate", json={"code": "def f():\n    return 1\n", "tests": [
                {"type": "call", "entry_point": "f", "args": [], "expected": 1},
                {"type": "call", "entry_point": "f", "args": [], "expected": 2}]})
            await c.post("/v1/run", json={"code": "import time; time.sleep(5)", "timeout_s": 0.2})
            return (await c.get("/metrics")).text

    text = asyncio.run(go())
    assert 'lad_sandbox_verdicts_total{status="passed"} 1.0' in text
    assert 'lad_sandbox_verdicts_total{status="failed"} 1.0' in text
    assert 'lad_sandbox_runs_total{status="timeout"} 1.0' in text
    assert 'lad_sandbox_requests_total{code="200",path="/v1/evaluate"} 1.0' in text
    assert 'lad_sandbox_request_seconds_count{path="/v1/run"} 1.0' in text
    assert "lad_sandbox_queue_depth 0.0" in text
    # the pool's counters as /healthz has them (the executor is shared by this module's tests)
    stats = executor.stats()
    assert stats["recycled"]["timeout"] >= 1
    assert f'lad_sandbox_sandboxes_recycled_total{{reason="timeout"}} {float(stats["recycled"]["timeout"])}' in text
    started = re.search(r"^lad_sandbox_sandboxes_started_total (\d+)\.0$", text, re.M)
    assert started and 1 <= int(started.group(1)) <= stats["started"]  # replacements start in the background
    assert f"lad_sandbox_jobs_total {float(stats['jobs'])}" in text
    assert "lad_sandbox_start_failures_total 0.0" in text


def test_serve_refuses_to_start_without_bubblewrap(tmp_path):
    # a PATH with the interpreter's tools but no bwrap
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ldd",):
        os.symlink(shutil.which(tool), bin_dir / tool)
    env = dict(os.environ, PATH=str(bin_dir))
    done = subprocess.run([str(LAD), "sandbox", "serve", "--port", "1"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "bubblewrap ('bwrap') is not installed" in done.stderr
    assert "Traceback" not in done.stderr


def test_split_by_size():
    assert split_by_size([5, 5, 5, 20, 1], 10) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    assert split_by_size([3, 3, 3], 100) == [range(0, 3)]
    assert split_by_size([], 10) == []


def _evaluate_requests(metrics: str) -> int:
    line = next(x for x in metrics.splitlines() if x.startswith('lad_sandbox_requests_total{code="200",path="/v1/evaluate"}'))
    return int(float(line.split()[-1]))


def test_the_client_splits_oversized_test_lists(executor):
    """Each call test below is 69 or 70 bytes on the wire with its comma; at 200 bytes a request, the 10
    tests go as 5 requests of 2 and come back as one result in order. With stop_on_first_failure
    the slices after the failing one (test 5) are not sent."""
    app = _app(executor)
    tests = [{"type": "call", "entry_point": "f", "args": [i], "expected": i if i != 5 else -1} for i in range(10)]

    async def go(stop: bool):
        async with AsyncSandboxClient("http://sandbox", token=TOKEN, transport=httpx.ASGITransport(app=app),
                                      max_request_bytes=200) as c:
            result = await c.evaluate("def f(x):\n    return x\n", tests, stop_on_first_failure=stop)
        async with _client(app) as c:
            return result, _evaluate_requests((await c.get("/metrics")).text)

    every, sent = asyncio.run(go(False))
    assert sent == 5
    assert [v.status for v in every.verdicts] == ["passed"] * 5 + ["failed"] + ["passed"] * 4
    assert (every.passed, every.total, every.status) == (9, 10, "ok")
    assert every.verdicts[5].detail == "returned 5, expected -1"
    stopped, sent = asyncio.run(go(True))
    assert sent == 5 + 3
    assert [v.status for v in stopped.verdicts] == ["passed"] * 5 + ["failed"] + ["skipped"] * 4
    assert (stopped.passed, stopped.total) == (5, 10)
    with pytest.raises(ValueError, match="max_request_bytes must be positive, got 0"):
        AsyncSandboxClient("http://sandbox", max_request_bytes=0)


def test_the_returned_value_cap_travels_with_the_request():
    """A client's value_limit_mb reaches the service in the request body; the service refuses
    more than its maximum, naming the field."""
    code = "def big(n):\n    return 'x' * n\n"
    tests = [{"type": "call", "entry_point": "big", "args": [2 << 20]}]
    with Executor(SandboxConfig(value_limit_bytes=1 << 20, max_value_limit_bytes=4 << 20)) as ex:
        app = _app(ex)

        async def go(value_limit_mb):
            async with AsyncSandboxClient("http://sandbox", token=TOKEN, transport=httpx.ASGITransport(app=app),
                                          value_limit_mb=value_limit_mb, retries=0) as c:
                return (await c.evaluate(code, tests)).verdicts[0]

        assert asyncio.run(go(None)).status == "output_limit"
        raised = asyncio.run(go(3))
        assert (raised.status, raised.output) == ("passed", "x" * (2 << 20))
        with pytest.raises(SandboxRequestError) as info:
            asyncio.run(go(8))
    assert (info.value.status_code, info.value.detail) == (422, "value_limit_mb: 8 exceeds this service's maximum of 4")
