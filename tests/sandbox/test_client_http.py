"""The blocking client's HTTP behaviour against a scripted HTTP/1.1 server: kept-alive
connections, the bearer token and a path prefix, retries on 429/5xx with Retry-After, a
connection the server closed while idle, and an unreachable service."""

from __future__ import annotations

import http.server
import json
import shutil
import ssl
import subprocess
import threading
import time

import pytest

from lad.local_server import free_port
from lad.sandbox.client import SandboxClient, SandboxRequestError

OK = json.dumps({"status": "ok", "exit_code": 0, "stdout": "45\n", "stderr": "", "wall_s": 0.001,
                 "truncated": False, "isolation": "bwrap"}).encode()


class Script:
    """The answers the server gives, in order (the last one repeats), and what it saw."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen = []  # (connection number, path, Authorization header)
        self.connections = 0
        self.lock = threading.Lock()

    def next(self):
        with self.lock:
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def serve():
    servers = []

    def start(*answers, tls: ssl.SSLContext | None = None) -> tuple[str, Script]:
        script = Script(answers)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with script.lock:
                    script.connections += 1
                    self.number = script.connections

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                script.seen.append((self.number, self.path, self.headers.get("Authorization")))
                status, headers, body, close = script.next()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", "Content-Length": str(len(body)),
                                   **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = close  # closed without saying so, as an idle timeout does

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}", script

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_requests_share_one_kept_alive_connection_with_token_and_path_prefix(serve):
    url, script = serve((200, {}, OK, False))
    with SandboxClient(url + "/sandbox/", token="t0k") as client:
        assert [client.run("print(45)").stdout for _ in range(3)] == ["45\n"] * 3
    assert script.seen == [(1, "/sandbox/v1/run", "Bearer t0k")] * 3


def test_429_and_5xx_are_retried_honouring_retry_after(serve):
    url, script = serve((429, {"Retry-After": "1"}, b'{"detail": "busy"}', False),
                        (503, {}, b"unavailable", False), (200, {}, OK, False))
    with SandboxClient(url, retries=2, backoff_s=0.01) as client:
        start = time.monotonic()
        assert client.run("print(45)").status == "ok"
        waited = time.monotonic() - start
    assert len(script.seen) == 3
    assert 1.0 <= waited < 5.0  # the Retry-After second, not the 10 ms backoff


def test_the_last_refusal_is_raised_with_the_service_detail(serve):
    url, script = serve((429, {"Retry-After": "0"}, b'{"detail": "all workers busy"}', False))
    with SandboxClient(url, retries=1, backoff_s=0.01) as client:
        with pytest.raises(SandboxRequestError) as err:
            client.run("print(45)")
    assert (err.value.status_code, err.value.detail, len(script.seen)) == (429, "all workers busy", 2)


def test_a_client_error_is_not_retried(serve):
    url, script = serve((422, {}, b'{"detail": "code: Field required"}', False))
    with SandboxClient(url, retries=3, backoff_s=0.01) as client:
        with pytest.raises(SandboxRequestError, match="422: code: Field required"):
            client.run("print(45)")
    assert len(script.seen) == 1


def test_a_connection_the_service_closed_while_idle_is_replaced_without_a_retry(serve):
    url, script = serve((200, {}, OK, True))
    with SandboxClient(url, retries=0) as client:
        assert [client.run("print(45)").stdout for _ in range(3)] == ["45\n"] * 3
    assert [number for number, _, _ in script.seen] == [1, 2, 3]


def test_an_unreachable_service_is_a_request_error_after_the_retries():
    url = f"http://127.0.0.1:{free_port()}"
    with SandboxClient(url, retries=2, backoff_s=0.01) as client:
        with pytest.raises(SandboxRequestError, match=f"cannot reach {url}: ConnectionRefusedError") as err:
            client.run("print(45)")
    assert err.value.status_code == 0


@pytest.mark.parametrize("url", ["ftp://host/", "127.0.0.1:8080", "http:///v1", "http://host:port/", "http://host:99999"])
def test_a_url_that_is_not_http_is_refused_by_name(url):
    with pytest.raises(ValueError, match="expected http://host"):
        SandboxClient(url)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command makes the test certificate")
def test_https_verifies_the_service_certificate(serve, tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=lad-sandbox", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    url, script = serve((200, {}, OK, False), tls=tls)
    with SandboxClient(url, retries=0) as client:  # a certificate nobody vouches for
        with pytest.raises(SandboxRequestError, match="CERTIFICATE_VERIFY_FAILED"):
            client.run("print(45)")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now trusted, as a cluster's CA bundle would make it
    with SandboxClient(url, retries=0) as client:
        assert client.run("print(45)").stdout == "45\n"
    assert [path for _, path, _ in script.seen] == ["/v1/run"]
