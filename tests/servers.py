"""Real servers on 127.0.0.1 for integration tests, started and stopped by the tests.

- :class:`S3Server`: moto's S3 in server mode (the same WSGI app ``moto_server`` runs), served by
  werkzeug in a thread, behind a small fault-injection layer: it can answer with S3 throttling
  (503 SlowDown) or stop the server after a number of uploads. Moto keeps its objects in this
  process, so a stopped server's objects can still be inspected through a new one.
- :class:`MlflowServer`: ``mlflow server`` in a subprocess with a sqlite backend and an S3
  artifact root.

Fixtures for other test modules: import them (``from servers import s3_server, s3  # noqa: F401``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lad.local_server import free_port, stop_process_group, wait_until_healthy

_CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)



@dataclass
class Faults:
    """What the S3 server does wrong, and what it saw."""

    throttle_next: int = 0  # answer this many coming requests with 503 SlowDown
    stop_after_puts: int | None = None  # stop the server once this many PUTs have been answered
    stall_after_puts: int | None = None  # hold every PUT after this many until `release` is set
    release: threading.Event = field(default_factory=threading.Event)
    throttled: int = 0
    puts: int = 0  # PUTs answered
    puts_started: int = 0
    stalled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _FaultLayer:
    def __init__(self, app, server: "S3Server"):
        self.app = app
        self.server = server

    def __call__(self, environ, start_response):
        faults = self.server.faults

        def closing_start_response(status, headers, exc_info=None):
            # No keep-alive: once the server stops, every later request really finds it gone.
            return start_response(status, [h for h in headers if h[0].lower() != "connection"] + [("Connection", "close")], exc_info)

        with faults.lock:
            throttle = faults.throttle_next > 0
            if throttle:
                faults.throttle_next -= 1
                faults.throttled += 1
        if throttle:
            _drain(environ)
            closing_start_response("503 Slow Down", [("Content-Type", "application/xml"), ("Content-Length", str(len(_SLOWDOWN)))])
            return [_SLOWDOWN]
        if environ["REQUEST_METHOD"] == "PUT":
            with faults.lock:
                stall = faults.stall_after_puts is not None and faults.puts_started >= faults.stall_after_puts
                faults.puts_started += 1
                faults.stalled += stall
            if stall:
                # A writer that hangs here can be killed mid-upload; its held request is then
                # dropped, never half-applied.
                faults.release.wait(timeout=120)
                _drain(environ)
                closing_start_response("500 Internal Server Error", [("Content-Length", "0")])
                return [b""]
        body = self.app(environ, closing_start_response)
        if environ["REQUEST_METHOD"] == "PUT":
            with faults.lock:
                faults.puts += 1
                stop = faults.stop_after_puts is not None and faults.puts >= faults.stop_after_puts
                if stop:
                    faults.stop_after_puts = None
            if stop:
                threading.Thread(target=self.server.stop, daemon=True).start()
        return body


def _drain(environ) -> None:
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        while stream.read(1 << 16):
            pass
    else:
        stream.read(int(environ.get("CONTENT_LENGTH") or 0))


class S3Server:
    """moto's S3 server on 127.0.0.1 (ephemeral port), with injectable faults."""

    def __init__(self) -> None:
        self.faults = Faults()
        self._server = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**_CREDS, "AWS_ENDPOINT_URL": self.endpoint}

    def start(self) -> "S3Server":
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        app = _FaultLayer(DomainDispatcherApplication(create_backend_app), self)
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()  # close the listening socket: new connections are refused

    @property
    def running(self) -> bool:
        return self._server is not None

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, **{k.lower(): v for k, v in _CREDS.items() if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")


class MlflowServer:
    """``mlflow server`` in its own process group: sqlite backend, artifacts written by clients to S3."""

    def __init__(self, workdir: Path, artifact_root: str, env: dict[str, str]):
        self.workdir = workdir
        self.artifact_root = artifact_root
        self.env = env
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "mlflow-server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "MlflowServer":
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--default-artifact-root", self.artifact_root,
            "--no-serve-artifacts",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            # No background job workers: the tests need none, and they slow the start on small machines.
            env = {**os.environ, **self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        problem = wait_until_healthy(self.proc, f"{self.uri}/health", timeout)
        if problem is not None:
            self.stop()
            raise RuntimeError(f"mlflow server {problem}:\n{self.log.read_text()[-3000:]}")
        return self

    def stop(self) -> None:
        stop_process_group(self.proc)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server().start()
    yield server
    server.stop()


@dataclass
class S3Context:
    server: S3Server
    bucket: str

    @property
    def root(self) -> str:
        return f"s3://{self.bucket}"


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The shared S3 server with AWS variables pointing at it and a fresh bucket; faults reset."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.faults = Faults()
    s3_server.client().create_bucket(Bucket=bucket)
    s3_server.faults = Faults()  # counters start at the test's first request
    yield S3Context(s3_server, bucket)
    s3_server.faults.release.set()  # never leave a request held for the next test
    s3_server.faults = Faults()


@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory):
    """An ``mlflow server`` whose artifact root is a bucket on the S3 server."""
    bucket = f"mlflow-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    env = s3_server.env()  # the standard AWS variables are enough for MLflow's S3 client too
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), f"s3://{bucket}/artifacts", env).start()
    server.bucket = bucket
    yield server
    server.stop()


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """An embedded MLflow store (sqlite) in the test's folder, as MLFLOW_TRACKING_URI; MLflow's
    process-wide URIs are restored afterwards."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the experiment's default artifact root is relative to it
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield uri
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)
