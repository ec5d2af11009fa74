"""Client of the sandbox: one call to evaluate a program against tests, batched variants for
many programs, sync and asyncio. With no URL (argument or $LAD_SANDBOX_URL) the same API runs
an in-process executor (same isolation, no service needed).

    from lad.sandbox.client import SandboxClient
    with SandboxClient() as sb:                        # local, or SandboxClient("http://host:8080")
        r = sb.evaluate(code, [{"type": "stdin", "input": "1 2\\n", "output": "3\\n"}])
        r.passed, r.total, [v.status for v in r.verdicts]
        results = sb.evaluate_many([(code_a, tests_a), (code_b, tests_b)])

A program whose tests would make a request body larger than ``max_request_bytes`` goes to the
service as several requests (consecutive slices of its tests, see ``split_by_size``) and comes
back as one result with the verdicts in order.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, NamedTuple, Optional, Sequence, Union

import httpx
import pydantic_core

from lad.sandbox.config import SandboxConfig
from lad.sandbox.models import SKIPPED_DETAIL, EvaluateRequest, EvaluateResult, RunRequest, RunResult, Verdict

URL_ENV = "LAD_SANDBOX_URL"
TOKEN_ENV = "LAD_SANDBOX_TOKEN"
RETRY_STATUS = {429, 500, 502, 503, 504}
# Tests per request body, well under the service's default 64 MiB limit (some HumanEval+
# expected outputs are 12 MB each).
MAX_REQUEST_BYTES = 16 << 20
JSON_HEADERS = {"Content-Type": "application/json"}

TestSpec = Union[dict, Any]
Program = Union[EvaluateRequest, tuple]  # EvaluateRequest or (code, tests)


class SandboxRequestError(RuntimeError):
    """The service refused a request (4xx other than 429) or kept failing after the retries."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(f"sandbox service answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def _evaluate_request(item: Program, timeout_s: Optional[float], memory_mb: Optional[int],
                      stop_on_first_failure: bool = False, value_limit_mb: Optional[int] = None) -> EvaluateRequest:
    if isinstance(item, EvaluateRequest):
        return item
    code, tests = item
    return EvaluateRequest(code=code, tests=list(tests), timeout_s=timeout_s, memory_mb=memory_mb,
                           value_limit_mb=value_limit_mb, stop_on_first_failure=stop_on_first_failure)


def split_by_size(sizes: Sequence[int], limit: int) -> list[range]:
    """Consecutive slices of items whose sizes add up to at most ``limit`` each (an item larger
    than the limit goes alone)."""
    slices, start, total = [], 0, 0
    for i, n in enumerate(sizes):
        if i > start and total + n > limit:
            slices.append(range(start, i))
            start, total = i, 0
        total += n
    if sizes:
        slices.append(range(start, len(sizes)))
    return slices


def _json(value) -> bytes:
    """JSON as json.dumps writes it (NaN and Infinity included), through pydantic-core, which
    formats the floats of large values several times faster; json's takes what it refuses
    (lone surrogates)."""
    try:
        return pydantic_core.to_json(value)
    except pydantic_core.PydanticSerializationError:
        return json.dumps(value).encode()


def _test_json(t) -> bytes:
    """A test as the service reads it. Built from the fields directly: pydantic's model_dump
    copied every value (hundreds of MB for HumanEval+). ``expected`` is sent only when it was
    given, even if None."""
    if t.type == "call":
        d = {"type": "call", "entry_point": t.entry_point, "args": t.args, "atol": t.atol}
        if "expected" in t.model_fields_set:
            d["expected"] = t.expected
        if t.compare != "value":
            d["compare"] = t.compare
        if t.alternatives:
            d["alternatives"] = t.alternatives
    elif t.type == "stdin":
        d = {"type": "stdin", "input": t.input, "output": t.output}
        if t.atol is not None:
            d["atol"] = t.atol
    else:
        d = {"type": "assert", "code": t.code}
    return _json(d)


class _Plan:
    """The request bodies of one program: a single one, or one per slice of its tests, sent in
    order (with stop_on_first_failure, a failure skips every later slice)."""

    def __init__(self, req: EvaluateRequest, limit: int):
        self.req = req
        tests = [_test_json(t) for t in req.tests]
        head = b'{"code":' + _json(req.code)
        for key in ("timeout_s", "memory_mb", "value_limit_mb"):
            if getattr(req, key) is not None:
                head += b',"%s":%s' % (key.encode(), _json(getattr(req, key)))
        if req.stop_on_first_failure:
            head += b',"stop_on_first_failure":true'
        self.slices = split_by_size([len(t) + 1 for t in tests], limit)
        self.bodies = [head + b',"tests":[' + b",".join(tests[i] for i in part) + b"]}" for part in self.slices]

    def skipped(self, i: int) -> EvaluateResult:
        n = len(self.slices[i])
        return EvaluateResult(status="ok", passed=0, total=n,
                              verdicts=[Verdict(status="skipped", detail=SKIPPED_DETAIL) for _ in range(n)])

    def stops(self, result: EvaluateResult) -> bool:
        """Whether the slices after ``result`` are skipped (stop_on_first_failure)."""
        return self.req.stop_on_first_failure and result.passed != result.total

    @staticmethod
    def merge(parts: list[EvaluateResult]) -> EvaluateResult:
        if len(parts) == 1:
            return parts[0]
        return EvaluateResult(status="sandbox_error" if any(p.status != "ok" for p in parts) else "ok",
                              passed=sum(p.passed for p in parts), total=sum(p.total for p in parts),
                              verdicts=[v for p in parts for v in p.verdicts], wall_s=round(sum(p.wall_s for p in parts), 6),
                              isolation=parts[0].isolation)


class _Reply(NamedTuple):
    status: int
    retry_after: str  # the Retry-After header, "" when absent
    body: bytes


def _detail(reply: _Reply) -> str:
    text = reply.body.decode("utf-8", "replace")
    try:
        return str(json.loads(text).get("detail", text))
    except (ValueError, AttributeError):
        return text[:500]


def _delay(attempt: int, backoff_s: float, reply: Optional[_Reply]) -> float:
    delay = backoff_s * (2 ** attempt)
    if reply is not None and reply.retry_after.isdigit():
        delay = max(delay, float(reply.retry_after))
    return min(delay, 30.0)


class _Connections:
    """Keep-alive HTTP/1.1 connections (http.client), one per request in flight, reused. A
    request costs a third of the CPU it did through httpx, which decides throughput when the
    client shares a few cores with the service and its sandboxes."""

    STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)

    def __init__(self, url: str, timeout_s: float, headers: dict):
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port
        except ValueError:  # not a number, or out of range
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise ValueError(f"sandbox URL {url!r}: expected http://host[:port][/path] or https://...")
        self._connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port, self._prefix = parts.hostname, port, parts.path.rstrip("/")
        self._timeout = timeout_s
        self._headers = {**JSON_HEADERS, **headers}
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._closed = False

    def post(self, path: str, body: bytes) -> _Reply:
        """One POST; raises OSError or http.client.HTTPException when the service cannot be
        reached. A kept-alive connection that the service closed while it was idle is replaced."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            try:
                return self._send(conn, path, body)
            except self.STALE:
                pass
        return self._send(self._connection(self._host, self._port, timeout=self._timeout), path, body)

    def _send(self, conn: http.client.HTTPConnection, path: str, body: bytes) -> _Reply:
        try:
            conn.request("POST", self._prefix + path, body=body, headers=self._headers)
            response = conn.getresponse()
            reply = _Reply(response.status, response.getheader("retry-after", ""), response.read())
        except BaseException:
            conn.close()
            raise
        with self._lock:
            if self._closed:
                conn.close()
            else:
                self._idle.append(conn)
        return reply

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Settings:
    def __init__(self, url: Optional[str], token: Optional[str], timeout_s: float, retries: int, backoff_s: float,
                 config: Optional[SandboxConfig], concurrency: Optional[int], max_request_bytes: int,
                 value_limit_mb: Optional[int]):
        if max_request_bytes <= 0:
            raise ValueError(f"max_request_bytes must be positive, got {max_request_bytes}")
        if value_limit_mb is not None and value_limit_mb <= 0:
            raise ValueError(f"value_limit_mb must be positive, got {value_limit_mb}")
        self.max_request_bytes = max_request_bytes
        self.value_limit_mb = value_limit_mb
        self.url = (url if url is not None else os.environ.get(URL_ENV) or None)
        self.url = self.url.rstrip("/") if self.url else None
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency or (8 if self.url else max(1, os.cpu_count() or 1))
        self.executor = None
        if self.url is None:
            from lad.sandbox.executor import Executor
            self.executor = Executor(config or SandboxConfig())

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


class SandboxClient:
    """Blocking client. ``url=None`` and no $LAD_SANDBOX_URL: in-process executor.
    ``value_limit_mb``: the cap on one returned value that every evaluate request asks for
    (default: the service's own, 16 MiB; a service refuses more than its maximum)."""

    def __init__(self, url: Optional[str] = None, *, token: Optional[str] = None, timeout_s: float = 600.0,
                 retries: int = 5, backoff_s: float = 0.25, config: Optional[SandboxConfig] = None,
                 concurrency: Optional[int] = None, max_request_bytes: int = MAX_REQUEST_BYTES,
                 value_limit_mb: Optional[int] = None):
        self._s = _Settings(url, token, timeout_s, retries, backoff_s, config, concurrency, max_request_bytes,
                            value_limit_mb)
        self._http = _Connections(self._s.url, timeout_s, self._s.headers) if self._s.url else None

    @property
    def url(self) -> Optional[str]:
        return self._s.url

    def _post(self, path: str, body: bytes) -> bytes:
        reply = None
        for attempt in range(self._s.retries + 1):
            try:
                reply = self._http.post(path, body)
            except (OSError, http.client.HTTPException) as err:
                if attempt == self._s.retries:
                    raise SandboxRequestError(0, f"cannot reach {self._s.url}: {err!r}") from err
                time.sleep(_delay(attempt, self._s.backoff_s, None))
                continue
            if reply.status not in RETRY_STATUS or attempt == self._s.retries:
                break
            time.sleep(_delay(attempt, self._s.backoff_s, reply))
        if reply.status != 200:
            raise SandboxRequestError(reply.status, _detail(reply))
        return reply.body

    def run(self, code: str, stdin: str = "", *, timeout_s: Optional[float] = None,
            memory_mb: Optional[int] = None) -> RunResult:
        req = RunRequest(code=code, stdin=stdin, timeout_s=timeout_s, memory_mb=memory_mb)
        if self._s.executor is not None:
            return self._s.executor.run(req)
        return RunResult.model_validate_json(self._post("/v1/run", req.model_dump_json(exclude_none=True).encode()))

    def evaluate(self, code: str, tests: Sequence[TestSpec], *, timeout_s: Optional[float] = None,
                 memory_mb: Optional[int] = None, stop_on_first_failure: bool = False) -> EvaluateResult:
        """Run ``tests`` against ``code``; result has passed, total and verdicts. With
        ``stop_on_first_failure``, the tests after the first one that does not pass are skipped."""
        return self._evaluate(_evaluate_request((code, tests), timeout_s, memory_mb, stop_on_first_failure,
                                                self._s.value_limit_mb))

    def _evaluate(self, req: EvaluateRequest) -> EvaluateResult:
        """One program: its request bodies in order (built here, in the calling worker thread, so
        that encoding one program overlaps the service's work on another)."""
        if self._s.executor is not None:
            return self._s.executor.evaluate(req)
        plan = _Plan(req, self._s.max_request_bytes)
        results: list[EvaluateResult] = []
        for i, body in enumerate(plan.bodies):
            if results and plan.stops(results[-1]):
                results.append(plan.skipped(i))
            else:
                results.append(EvaluateResult.model_validate_json(self._post("/v1/evaluate", body)))
        return plan.merge(results)

    def evaluate_many(self, programs: Iterable[Program], *, timeout_s: Optional[float] = None,
                      memory_mb: Optional[int] = None, stop_on_first_failure: bool = False) -> list[EvaluateResult]:
        """Evaluate many (code, tests) pairs concurrently; results in input order."""
        reqs = [_evaluate_request(p, timeout_s, memory_mb, stop_on_first_failure, self._s.value_limit_mb)
                for p in programs]
        if len(reqs) == 1:
            return [self._evaluate(reqs[0])]
        with ThreadPoolExecutor(self._s.concurrency) as pool:
            return list(pool.map(self._evaluate, reqs))

    def run_many(self, programs: Iterable[Union[str, tuple]], *, timeout_s: Optional[float] = None,
                 memory_mb: Optional[int] = None) -> list[RunResult]:
        """Run many programs (code, or (code, stdin)) concurrently; results in input order."""
        items = [(p, "") if isinstance(p, str) else p for p in programs]
        with ThreadPoolExecutor(self._s.concurrency) as pool:
            return list(pool.map(lambda it: self.run(it[0], it[1], timeout_s=timeout_s, memory_mb=memory_mb), items))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._s.executor is not None:
            self._s.executor.close()

    def __enter__(self) -> "SandboxClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncSandboxClient:
    """asyncio client with the same API; batches run ``concurrency`` requests at a time."""

    def __init__(self, url: Optional[str] = None, *, token: Optional[str] = None, timeout_s: float = 600.0,
                 retries: int = 5, backoff_s: float = 0.25, config: Optional[SandboxConfig] = None,
                 concurrency: Optional[int] = None, transport: Optional[httpx.AsyncBaseTransport] = None,
                 max_request_bytes: int = MAX_REQUEST_BYTES, value_limit_mb: Optional[int] = None):
        self._s = _Settings(url, token, timeout_s, retries, backoff_s, config, concurrency, max_request_bytes,
                            value_limit_mb)
        self._http = (httpx.AsyncClient(timeout=timeout_s, headers=self._s.headers, transport=transport)
                      if self._s.url else None)

    async def _post(self, path: str, body: bytes) -> bytes:
        reply = None
        for attempt in range(self._s.retries + 1):
            try:
                response = await self._http.post(self._s.url + path, content=body, headers=JSON_HEADERS)
            except httpx.TransportError as err:
                if attempt == self._s.retries:
                    raise SandboxRequestError(0, f"cannot reach {self._s.url}: {err!r}") from err
                await asyncio.sleep(_delay(attempt, self._s.backoff_s, None))
                continue
            reply = _Reply(response.status_code, response.headers.get("retry-after", ""), response.content)
            if reply.status not in RETRY_STATUS or attempt == self._s.retries:
                break
            await asyncio.sleep(_delay(attempt, self._s.backoff_s, reply))
        if reply.status != 200:
            raise SandboxRequestError(reply.status, _detail(reply))
        return reply.body

    async def run(self, code: str, stdin: str = "", *, timeout_s: Optional[float] = None,
                  memory_mb: Optional[int] = None) -> RunResult:
        req = RunRequest(code=code, stdin=stdin, timeout_s=timeout_s, memory_mb=memory_mb)
        if self._s.executor is not None:
            return await asyncio.to_thread(self._s.executor.run, req)
        return RunResult.model_validate_json(
            await self._post("/v1/run", req.model_dump_json(exclude_none=True).encode()))

    async def evaluate(self, code: str, tests: Sequence[TestSpec], *, timeout_s: Optional[float] = None,
                       memory_mb: Optional[int] = None, stop_on_first_failure: bool = False) -> EvaluateResult:
        return await self._evaluate(_evaluate_request((code, tests), timeout_s, memory_mb, stop_on_first_failure,
                                                      self._s.value_limit_mb))

    async def _evaluate(self, req: EvaluateRequest) -> EvaluateResult:
        if self._s.executor is not None:
            return await asyncio.to_thread(self._s.executor.evaluate, req)
        plan = _Plan(req, self._s.max_request_bytes)
        results: list[EvaluateResult] = []
        for i, body in enumerate(plan.bodies):
            if results and plan.stops(results[-1]):
                results.append(plan.skipped(i))
            else:
                results.append(EvaluateResult.model_validate_json(await self._post("/v1/evaluate", body)))
        return plan.merge(results)

    async def evaluate_many(self, programs: Iterable[Program], *, timeout_s: Optional[float] = None,
                            memory_mb: Optional[int] = None, stop_on_first_failure: bool = False
                            ) -> list[EvaluateResult]:
        reqs = [_evaluate_request(p, timeout_s, memory_mb, stop_on_first_failure, self._s.value_limit_mb)
                for p in programs]
        gate = asyncio.Semaphore(self._s.concurrency)

        async def one(req: EvaluateRequest) -> EvaluateResult:
            async with gate:
                return await self._evaluate(req)
        return list(await asyncio.gather(*(one(r) for r in reqs)))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._s.executor is not None:
            self._s.executor.close()

    async def __aenter__(self) -> "AsyncSandboxClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
