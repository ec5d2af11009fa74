"""The sandbox HTTP service: FastAPI app with bounded concurrency, auth, limits and metrics."""

from __future__ import annotations

import contextlib
import hmac
import os
import time
from typing import Optional

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, Field, ValidationError

from lad.sandbox.config import SandboxConfig
from lad.sandbox.executor import Executor, RequestError
from lad.sandbox.models import EvaluateRequest, EvaluateResult, RunRequest, RunResult

TOKEN_ENV = "LAD_SANDBOX_TOKEN"
OPEN_PATHS = {"/healthz"}  # readiness probes carry no token and learn nothing from it


class ServiceConfig(BaseModel):
    """The service around the executor."""

    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    workers: int = Field(2, gt=0, description="requests executed at once")
    queue: int = Field(64, ge=0, description="requests allowed to wait for a worker; more are answered 429")
    max_body_bytes: int = Field(64 << 20, gt=0, description="larger request bodies are answered 413")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 429")
    token: Optional[str] = Field(None, description=f"bearer token required on every request; default from ${TOKEN_ENV}")


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("lad_sandbox_requests", "HTTP requests by path and status code",
                                ["path", "code"], registry=self.registry)
        self.verdicts = Counter("lad_sandbox_verdicts", "test verdicts returned by /v1/evaluate",
                                ["status"], registry=self.registry)
        self.runs = Counter("lad_sandbox_runs", "run statuses returned by /v1/run", ["status"], registry=self.registry)
        self.queue = Gauge("lad_sandbox_queue_depth", "requests waiting for a worker", registry=self.registry)
        self.busy = Gauge("lad_sandbox_busy_workers", "requests executing now", registry=self.registry)
        self.latency = Histogram("lad_sandbox_request_seconds", "request latency (queue wait included)", ["path"],
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
                                 registry=self.registry)


class _PoolCollector:
    """The executor's sandbox pool, read at scrape time: what to alert on when sandboxes keep
    being recycled or cannot start."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def collect(self):
        stats = self.executor.stats()
        yield CounterMetricFamily("lad_sandbox_sandboxes_started", "warm sandboxes started", value=stats["started"])
        recycled = CounterMetricFamily("lad_sandbox_sandboxes_recycled", "sandboxes killed and replaced, by reason",
                                       labels=["reason"])
        for reason, count in sorted(stats["recycled"].items()):
            recycled.add_metric([reason], count)
        yield recycled
        yield CounterMetricFamily("lad_sandbox_start_failures", "sandbox starts that failed", value=stats["start_failures"])
        yield CounterMetricFamily("lad_sandbox_jobs", "jobs run in sandboxes", value=stats["jobs"])
        yield GaugeMetricFamily("lad_sandbox_idle_sandboxes", "warm sandboxes waiting for a job", value=len(stats["idle"]))


def _field_message(err: dict) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    return f"{loc}: {err.get('msg', 'invalid')}"


def create_app(config: Optional[ServiceConfig] = None, executor: Optional[Executor] = None) -> FastAPI:
    """Build the app. Raises IsolationError when bwrap isolation is configured but unavailable."""
    cfg = config or ServiceConfig()
    token = cfg.token if cfg.token is not None else os.environ.get(TOKEN_ENV) or None
    ex = executor or Executor(cfg.sandbox)
    ex.warm(cfg.workers)  # one warm sandbox per worker, started in the background
    limiter = anyio.CapacityLimiter(cfg.workers)
    metrics = _Metrics()
    metrics.registry.register(_PoolCollector(ex))
    state = {"admitted": 0}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if executor is None:  # the sandboxes this app started go with it
            ex.close()

    app = FastAPI(title="lad sandbox", version="1", lifespan=lifespan)
    app.state.executor = ex
    app.state.metrics = metrics

    def refusal(scope) -> Optional[JSONResponse]:
        """Why a request is refused before it reaches the API, or None."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if token is not None and scope["path"] not in OPEN_PATHS:
            supplied = headers.get("authorization", "")
            if not hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        if scope["method"] == "POST":
            length = headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"detail": "a Content-Length header is required"}, status_code=411)
            if int(length) > cfg.max_body_bytes:
                return JSONResponse({"detail": f"request body of {length} bytes exceeds the limit of "
                                               f"{cfg.max_body_bytes} bytes"}, status_code=413)
            if state["admitted"] >= cfg.workers + cfg.queue:
                return JSONResponse({"detail": "all workers busy and the queue is full; retry later"},
                                    status_code=429, headers={"Retry-After": str(cfg.retry_after_s)})
        return None

    class Guard:
        """Auth, size and admission checks, request metrics. Plain ASGI: Starlette's
        BaseHTTPMiddleware cost a task group and a streamed copy of every response, a third of
        the service's time per trivial request."""

        def __init__(self, app) -> None:
            self.app = app

        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            path, start, code = scope["path"], time.monotonic(), [500]

            async def sent(message) -> None:
                if message["type"] == "http.response.start":
                    code[0] = message["status"]
                await send(message)

            try:
                refused = refusal(scope)
                if refused is not None:
                    await refused(scope, receive, sent)
                elif scope["method"] == "POST":
                    state["admitted"] += 1
                    metrics.queue.set(max(0, state["admitted"] - cfg.workers))
                    try:
                        await self.app(scope, receive, sent)
                    finally:
                        state["admitted"] -= 1
                        metrics.queue.set(max(0, state["admitted"] - cfg.workers))
                else:
                    await self.app(scope, receive, sent)
            finally:
                metrics.requests.labels(path=path, code=str(code[0])).inc()
                if path.startswith("/v1/"):
                    metrics.latency.labels(path=path).observe(time.monotonic() - start)

    app.add_middleware(Guard)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        errors = exc.errors()
        return JSONResponse({"detail": "; ".join(_field_message(e) for e in errors[:20]),
                             "errors": [{"field": ".".join(str(p) for p in e.get("loc", ())), "msg": e.get("msg")}
                                        for e in errors[:20]]}, status_code=422)

    @app.exception_handler(RequestError)
    async def refused(_: Request, exc: RequestError):
        return JSONResponse({"detail": str(exc), "errors": [{"field": f"body.{exc.field}", "msg": str(exc)}]},
                            status_code=422)

    async def _execute(fn, req):
        metrics.busy.inc()
        try:
            return await anyio.to_thread.run_sync(fn, req, limiter=limiter)
        finally:
            metrics.busy.dec()

    # Responses are serialised by pydantic directly: FastAPI's generic encoder took seconds and
    # several copies of the data for the multi-megabyte outputs that HumanEval+ records.
    @app.post("/v1/run", response_model=RunResult)
    async def run(req: RunRequest) -> Response:
        result = await _execute(ex.run, req)
        metrics.runs.labels(status=result.status).inc()
        return Response(result.model_dump_json(), media_type="application/json")

    def evaluate_body(body: bytes) -> EvaluateResult:
        """Parse and validate in one pass, in the worker thread: FastAPI's own parsing (json, then
        pydantic) ran in the event loop and cost twice as much on the 16 MB bodies of HumanEval+."""
        try:
            req = EvaluateRequest.model_validate_json(body)
        except ValidationError as err:
            raise RequestValidationError([dict(e, loc=("body", *e["loc"])) for e in err.errors()]) from None
        return ex.evaluate(req)

    @app.post("/v1/evaluate", response_model=EvaluateResult, openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": EvaluateRequest.model_json_schema()}}}})
    async def evaluate(request: Request) -> Response:
        result = await _execute(evaluate_body, await request.body())
        for v in result.verdicts:
            metrics.verdicts.labels(status=v.status).inc()
        return Response(result.model_dump_json(), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict:
        pool = ex.stats()
        return {"status": "ok", "isolation": ex.isolation, "workers": cfg.workers,
                "busy": min(state["admitted"], cfg.workers), "queued": max(0, state["admitted"] - cfg.workers),
                "sandboxes": {k: pool[k] for k in ("started", "jobs", "recycled", "start_failures")}}

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
