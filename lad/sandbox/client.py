"""Client of the sandbox: one call to evaluate a program against tests, batched variants for
many programs, sync and asyncio. With no URL (argument or $LAD_SANDBOX_URL) the same API runs
an in-process executor (same isolation, no service needed).

    from lad.sandbox.client import SandboxClient
    with SandboxClient() as sb:                        # local, or SandboxClient("http://host:8080")
        r = sb.evaluate(code, [{"type": "stdin", "input": "1 2\\n", "output": "3\\n"}])
        r.passed, r.total, [v.status for v in r.verdicts]
        results = sb.evaluate_many([(code_a, tests_a), (code_b, tests_b)])
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Optional, Sequence, Union

import httpx

from lad.sandbox.config import SandboxConfig
from lad.sandbox.models import EvaluateRequest, EvaluateResult, RunRequest, RunResult

URL_ENV = "LAD_SANDBOX_URL"
TOKEN_ENV = "LAD_SANDBOX_TOKEN"
RETRY_STATUS = {429, 500, 502, 503, 504}

TestSpec = Union[dict, Any]
Program = Union[EvaluateRequest, tuple]  # EvaluateRequest or (code, tests)


class SandboxRequestError(RuntimeError):
    """The service refused a request (4xx other than 429) or kept failing after the retries."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(f"sandbox service answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def _evaluate_request(item: Program, timeout_s: Optional[float], memory_mb: Optional[int]) -> EvaluateRequest:
    if isinstance(item, EvaluateRequest):
        return item
    code, tests = item
    return EvaluateRequest(code=code, tests=list(tests), timeout_s=timeout_s, memory_mb=memory_mb)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500]


def _delay(attempt: int, backoff_s: float, response: Optional[httpx.Response]) -> float:
    delay = backoff_s * (2 ** attempt)
    if response is not None and response.headers.get("retry-after", "").isdigit():
        delay = max(delay, float(response.headers["retry-after"]))
    return min(delay, 30.0)


class _Settings:
    def __init__(self, url: Optional[str], token: Optional[str], timeout_s: float, retries: int, backoff_s: float,
                 config: Optional[SandboxConfig], concurrency: Optional[int]):
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
    """Blocking client. ``url=None`` and no $LAD_SANDBOX_URL: in-process executor."""

    def __init__(self, url: Optional[str] = None, *, token: Optional[str] = None, timeout_s: float = 600.0,
                 retries: int = 5, backoff_s: float = 0.25, config: Optional[SandboxConfig] = None,
                 concurrency: Optional[int] = None, transport: Optional[httpx.BaseTransport] = None):
        self._s = _Settings(url, token, timeout_s, retries, backoff_s, config, concurrency)
        self._http = (httpx.Client(timeout=timeout_s, headers=self._s.headers, transport=transport)
                      if self._s.url else None)

    @property
    def url(self) -> Optional[str]:
        return self._s.url

    def _post(self, path: str, body: dict) -> dict:
        response = None
        for attempt in range(self._s.retries + 1):
            try:
                response = self._http.post(self._s.url + path, json=body)
            except httpx.TransportError as err:
                if attempt == self._s.retries:
                    raise SandboxRequestError(0, f"cannot reach {self._s.url}: {err}") from err
                time.sleep(_delay(attempt, self._s.backoff_s, None))
                continue
            if response.status_code not in RETRY_STATUS or attempt == self._s.retries:
                break
            time.sleep(_delay(attempt, self._s.backoff_s, response))
        if response.status_code != 200:
            raise SandboxRequestError(response.status_code, _detail(response))
        return response.json()

    def run(self, code: str, stdin: str = "", *, timeout_s: Optional[float] = None,
            memory_mb: Optional[int] = None) -> RunResult:
        req = RunRequest(code=code, stdin=stdin, timeout_s=timeout_s, memory_mb=memory_mb)
        if self._s.executor is not None:
            return self._s.executor.run(req)
        return RunResult.model_validate(self._post("/v1/run", req.model_dump(exclude_none=True)))

    def evaluate(self, code: str, tests: Sequence[TestSpec], *, timeout_s: Optional[float] = None,
                 memory_mb: Optional[int] = None) -> EvaluateResult:
        """Run ``tests`` against ``code`` in one sandbox; result has passed, total and verdicts."""
        return self._evaluate(_evaluate_request((code, tests), timeout_s, memory_mb))

    def _evaluate(self, req: EvaluateRequest) -> EvaluateResult:
        if self._s.executor is not None:
            return self._s.executor.evaluate(req)
        return EvaluateResult.model_validate(self._post("/v1/evaluate", _wire(req)))

    def evaluate_many(self, programs: Iterable[Program], *, timeout_s: Optional[float] = None,
                      memory_mb: Optional[int] = None) -> list[EvaluateResult]:
        """Evaluate many (code, tests) pairs concurrently; results in input order."""
        reqs = [_evaluate_request(p, timeout_s, memory_mb) for p in programs]
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

    def __enter__(self) -> "SandboxClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncSandboxClient:
    """asyncio client with the same API; batches run ``concurrency`` requests at a time."""

    def __init__(self, url: Optional[str] = None, *, token: Optional[str] = None, timeout_s: float = 600.0,
                 retries: int = 5, backoff_s: float = 0.25, config: Optional[SandboxConfig] = None,
                 concurrency: Optional[int] = None, transport: Optional[httpx.AsyncBaseTransport] = None):
        self._s = _Settings(url, token, timeout_s, retries, backoff_s, config, concurrency)
        self._http = (httpx.AsyncClient(timeout=timeout_s, headers=self._s.headers, transport=transport)
                      if self._s.url else None)

    async def _post(self, path: str, body: dict) -> dict:
        response = None
        for attempt in range(self._s.retries + 1):
            try:
                response = await self._http.post(self._s.url + path, json=body)
            except httpx.TransportError as err:
                if attempt == self._s.retries:
                    raise SandboxRequestError(0, f"cannot reach {self._s.url}: {err}") from err
                await asyncio.sleep(_delay(attempt, self._s.backoff_s, None))
                continue
            if response.status_code not in RETRY_STATUS or attempt == self._s.retries:
                break
            await asyncio.sleep(_delay(attempt, self._s.backoff_s, response))
        if response.status_code != 200:
            raise SandboxRequestError(response.status_code, _detail(response))
        return response.json()

    async def run(self, code: str, stdin: str = "", *, timeout_s: Optional[float] = None,
                  memory_mb: Optional[int] = None) -> RunResult:
        req = RunRequest(code=code, stdin=stdin, timeout_s=timeout_s, memory_mb=memory_mb)
        if self._s.executor is not None:
            return await asyncio.to_thread(self._s.executor.run, req)
        return RunResult.model_validate(await self._post("/v1/run", req.model_dump(exclude_none=True)))

    async def evaluate(self, code: str, tests: Sequence[TestSpec], *, timeout_s: Optional[float] = None,
                       memory_mb: Optional[int] = None) -> EvaluateResult:
        return await self._evaluate(_evaluate_request((code, tests), timeout_s, memory_mb))

    async def _evaluate(self, req: EvaluateRequest) -> EvaluateResult:
        if self._s.executor is not None:
            return await asyncio.to_thread(self._s.executor.evaluate, req)
        return EvaluateResult.model_validate(await self._post("/v1/evaluate", _wire(req)))

    async def evaluate_many(self, programs: Iterable[Program], *, timeout_s: Optional[float] = None,
                            memory_mb: Optional[int] = None) -> list[EvaluateResult]:
        reqs = [_evaluate_request(p, timeout_s, memory_mb) for p in programs]
        gate = asyncio.Semaphore(self._s.concurrency)

        async def one(req: EvaluateRequest) -> EvaluateResult:
            async with gate:
                return await self._evaluate(req)
        return list(await asyncio.gather(*(one(r) for r in reqs)))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncSandboxClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


def _wire(req: EvaluateRequest) -> dict:
    """JSON body; a call test's ``expected`` is sent only when it was given (even if None)."""
    body = {"code": req.code, "tests": []}
    for t in req.tests:
        d = t.model_dump(exclude_none=True, exclude={"expected"} if hasattr(t, "expected") else set())
        if getattr(t, "type", None) == "call" and "expected" in t.model_fields_set:
            d["expected"] = t.expected
        body["tests"].append(d)
    if req.timeout_s is not None:
        body["timeout_s"] = req.timeout_s
    if req.memory_mb is not None:
        body["memory_mb"] = req.memory_mb
    return body
