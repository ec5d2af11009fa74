"""``lad pipeline submit`` and ``schedule`` against a stand-in for the KFP API server on
127.0.0.1: what the KFP client really sends (pipeline spec, parameters, cron, caching)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

REGISTRY = "registry.example.com/team"
ANSWERS = {
    ("GET", "/apis/v2beta1/healthz"): {"multi_user": False},
    ("GET", "/apis/v2beta1/experiments"): {"experiments": [], "total_size": 0},
    ("POST", "/apis/v2beta1/experiments"): {"experiment_id": "exp-1", "display_name": "lad-test"},
    ("POST", "/apis/v2beta1/runs"): {"run_id": "run-1", "display_name": "r"},
    ("POST", "/apis/v2beta1/recurringruns"): {"recurring_run_id": "rr-1", "display_name": "nightly"},
}


class FakeKfp(BaseHTTPRequestHandler):
    requests: list = []

    def _answer(self, method: str) -> None:
        path = self.path.split("?")[0]
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((method, path, body))
        answer = ANSWERS.get((method, path))
        data = json.dumps(answer if answer is not None else {"error": "not found"}).encode()
        self.send_response(200 if answer is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_server():
    FakeKfp.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeKfp.requests
    server.shutdown()


def posted(requests, path):
    return next(body for method, p, body in requests if method == "POST" and p == path)


def test_submit_sends_the_training_pipeline_with_the_arguments(kfp_server):
    from lad.pipeline.schedule import submit

    host, requests = kfp_server
    run_id, url = submit(host, "training", {"steps": 3, "objective": "grpo"}, experiment="lad-test", registry=REGISTRY,
                         run_name="r", caching=False)
    assert (run_id, url) == ("run-1", f"{host}/#/runs/details/run-1")
    assert posted(requests, "/apis/v2beta1/experiments")["display_name"] == "lad-test"
    run = posted(requests, "/apis/v2beta1/runs")
    assert run["display_name"] == "r" and run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {"steps": 3, "objective": "grpo"}
    spec = run["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "lad-training"
    tasks = spec["pipeline_spec"]["root"]["dag"]["tasks"]
    assert all(not t.get("cachingOptions", {}).get("enableCache") for t in tasks.values()), "--no-caching reaches every task"
    assert "exec-lad-train" in spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    images = {e["container"]["image"].rsplit(":", 1)[0] for e in spec["pipeline_spec"]["deploymentSpec"]["executors"].values()}
    assert images == {f"{REGISTRY}/lad-python", f"{REGISTRY}/lad-trainer"}, "this commit's images in the registry"


def test_schedule_creates_a_recurring_retraining_run(kfp_server):
    from lad.pipeline.schedule import schedule

    host, requests = kfp_server
    job = schedule(host, "retraining", "0 0 3 * * 1", {"new_data_uri": "s3://b/new/"}, experiment="lad-test", job_name="nightly",
                   registry=REGISTRY)
    assert job == "rr-1"
    rr = posted(requests, "/apis/v2beta1/recurringruns")
    assert rr["display_name"] == "nightly" and rr["experiment_id"] == "exp-1"
    assert rr["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert rr["max_concurrency"] == 1 and rr["no_catchup"] is True and rr["mode"] == "ENABLE"
    assert rr["runtime_config"]["parameters"] == {"new_data_uri": "s3://b/new/"}
    assert rr["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "lad-retraining"


def test_submit_and_schedule_send_the_pipeline_root(kfp_server):
    from lad.pipeline.schedule import schedule, submit

    host, requests = kfp_server
    submit(host, "training", {}, experiment="lad-test", registry=REGISTRY, pipeline_root="minio://mlpipeline/v2/artifacts/")
    assert posted(requests, "/apis/v2beta1/runs")["runtime_config"]["pipeline_root"] == "minio://mlpipeline/v2/artifacts"
    schedule(host, "retraining", "@daily", {}, experiment="lad-test", job_name="nightly", registry=REGISTRY,
             pipeline_root="s3://bucket/lad")
    assert posted(requests, "/apis/v2beta1/recurringruns")["runtime_config"]["pipeline_root"] == "s3://bucket/lad"


@pytest.mark.parametrize("root", ["gs://bucket/x", "/mnt/artifacts", "s3://", "minio:/bucket"])
def test_a_root_the_steps_cannot_share_files_through_is_refused_before_sending(kfp_server, root):
    from lad.pipeline.schedule import ScheduleError, submit

    host, requests = kfp_server
    with pytest.raises(ScheduleError, match=r"expected s3://BUCKET/PREFIX or minio://BUCKET/PREFIX$"):
        submit(host, "training", {}, experiment="lad-test", registry=REGISTRY, pipeline_root=root)
    assert requests == []
