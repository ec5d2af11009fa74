"""Multi-node RL training: the lad_train step submits a Kubernetes training job that runs the
DeepSpeed trainer under torchrun on every node, streams rank 0's log, and fails when the job fails.

Two kinds of job, one flow:

    TrainJob    (default) Kubeflow Trainer v2, trainer.kubeflow.org/v1alpha1, on the cluster's
                ``torch-distributed`` ClusterTrainingRuntime (a JobSet of indexed Jobs)
    PyTorchJob  the training operator's kubeflow.org/v1 job, for clusters without Trainer v2

The step first publishes its inputs (starting model, data) and the trainer's config under a
staging prefix next to its output artifact (``lad.storage``, with manifests), the job's rank 0
publishes the trained model there, and the step copies it into its output artifact. The step's
own pod holds no GPU (the pipeline gives it none when num_nodes > 1).

The job is named from the KFP run id and the stage, so a retried step finds the job its first
attempt submitted and follows it instead of submitting a second one (one that failed is replaced).
SIGTERM (a cancelled run) deletes the job with the step. Its pods carry
``sidecar.istio.io/inject: "false"``: an Istio sidecar keeps a finished pod running and blocks
the rendezvous of the nodes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, Field, field_validator

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NO_SIDECAR = {"sidecar.istio.io/inject": "false"}
POD_LABELS = {"app.kubernetes.io/part-of": "lad", "app.kubernetes.io/component": "rl-training"}
# Secret keys the job's pods get as variables (the pipeline's steps get the same from the same Secrets).
S3_KEYS, S3_OPTIONAL = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
MLFLOW_KEYS = ("MLFLOW_TRACKING_URI",)
MLFLOW_OPTIONAL = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
HF_OPTIONAL = ("HF_TOKEN",)


class LaunchError(RuntimeError):
    """The job could not be submitted, or it failed; the message names the job and the reason."""


class JobSettings(BaseModel):
    """How the training job is shaped and placed."""

    num_nodes: int = Field(ge=2, description="pods (nodes) of the job")
    gpus_per_node: int = Field(1, ge=1, description="GPUs of each pod; torchrun starts one process per GPU")
    gpu_type: str = Field("nvidia.com/gpu", min_length=1, description="the GPU resource name")
    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels the pods require")
    tolerations: list[dict] = Field(default_factory=list, description="tolerations of the pods")
    s3_secret: str = Field("lad-s3", description="Secret with the S3 credentials (keys named as the variables)")
    mlflow_secret: str = Field("lad-mlflow", description="Secret with MLFLOW_TRACKING_URI and its credentials")
    hf_secret: str = Field("lad-hf", description="optional Secret with HF_TOKEN")
    image: str = Field("", description="image of the pods; empty: the image of the pod that submits the job")
    kind: Literal["TrainJob", "PyTorchJob"] = Field("TrainJob", description="TrainJob (Kubeflow Trainer v2) or "
                                                    "PyTorchJob (the training operator, for older clusters)")
    runtime: str = Field("torch-distributed", min_length=1, description="the TrainJob's ClusterTrainingRuntime")
    namespace: Optional[str] = Field(None, description="None: the submitting pod's namespace")
    shm_size: str = Field("16Gi", description="size of the memory-backed /dev/shm (NCCL)")
    poll_s: float = Field(10.0, gt=0, description="seconds between job status checks")

    @field_validator("node_selector", "tolerations", mode="before")
    @classmethod
    def _json_text(cls, v: Any) -> Any:
        # Pipeline parameters of struct type may arrive as their JSON text.
        return json.loads(v) if isinstance(v, str) else v


def step_gpus(num_nodes: int, gpus_per_node: int) -> int:
    """GPUs of the lad_train step's own pod: all of a node's when it trains there, none when it
    only launches a multi-node job, whose pods hold the GPUs."""
    return 0 if num_nodes > 1 else gpus_per_node


def job_name(run_id: str, stage: str) -> str:
    """The job of pipeline run ``run_id``'s stage ``stage``: the same name on every attempt of the
    step, a DNS label (<= 63 characters); a fresh name outside a pipeline run."""
    label = re.sub(r"[^a-z0-9-]+", "-", stage.lower()).strip("-")[:30] or "train"
    key = f"{run_id}/{stage}" if run_id else uuid.uuid4().hex
    return f"lad-{label}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _worker_command(job: JobSettings, config_uri: str, publish_uri: str, *, rendezvous: bool) -> list[str]:
    # The job's controller gives torchrun the node count, rank and master (PET_* variables) itself.
    sizes = [f"--nnodes={job.num_nodes}", f"--nproc-per-node={job.gpus_per_node}"] if rendezvous else []
    return ["torchrun", *sizes, "-m", "lad.pipeline.worker", "--config", config_uri, "--publish", publish_uri]


def _secret_env(job: JobSettings) -> list[dict]:
    """The Secrets' keys as variables, one secretKeyRef each (a TrainJob's trainer takes env, not envFrom)."""
    out = []
    for secret, keys, optional in ((job.s3_secret, S3_KEYS, False), (job.s3_secret, S3_OPTIONAL, True),
                                   (job.mlflow_secret, MLFLOW_KEYS, False), (job.mlflow_secret, MLFLOW_OPTIONAL, True),
                                   (job.hf_secret, HF_OPTIONAL, True)):
        out += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k, "optional": optional}}} for k in keys]
    return out


def _placement(job: JobSettings) -> dict:
    return {**({"nodeSelector": job.node_selector} if job.node_selector else {}),
            **({"tolerations": job.tolerations} if job.tolerations else {})}


SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}


def _shm_volume(job: JobSettings) -> dict:
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": job.shm_size}}


def trainjob_spec(job: JobSettings, *, name: str, namespace: str, image: str, config_uri: str, publish_uri: str) -> dict:
    """The TrainJob: ``num_nodes`` nodes of the ``torch-distributed`` runtime, each
    ``torchrun -m lad.pipeline.worker``; placement, /dev/shm and the pod annotations as a runtime
    patch of the runtime's ``node`` job and container."""
    pod = {
        "metadata": {"labels": POD_LABELS, "annotations": NO_SIDECAR},
        "spec": {**_placement(job), "volumes": [_shm_volume(job)], "containers": [{"name": "node", "volumeMounts": [SHM_MOUNT]}]},
    }
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "lad"}},
        "spec": {
            "runtimeRef": {"name": job.runtime, "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"},
            "trainer": {
                "image": image,
                "command": _worker_command(job, config_uri, publish_uri, rendezvous=False),
                "numNodes": job.num_nodes,
                "numProcPerNode": job.gpus_per_node,
                "resourcesPerNode": {"limits": {job.gpu_type: str(job.gpus_per_node)}},
                "env": _secret_env(job),
            },
            "runtimePatches": [{
                "manager": "lad.pipeline",
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
                    {"name": "node", "template": {"spec": {"template": pod}}},
                ]}}},
            }],
        },
    }


def pytorchjob_spec(job: JobSettings, *, name: str, namespace: str, image: str, config_uri: str, publish_uri: str) -> dict:
    """The PyTorchJob: master + workers, each ``torchrun -m lad.pipeline.worker``. The operator
    injects torchrun's rendezvous settings (PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR,
    PET_MASTER_PORT) from ``nprocPerNode`` and the replica counts."""
    container = {
        "name": "pytorch",  # the training operator finds the training container by this name
        "image": image,
        "command": _worker_command(job, config_uri, publish_uri, rendezvous=True),
        "resources": {"limits": {job.gpu_type: str(job.gpus_per_node)}},
        "env": _secret_env(job),
        "volumeMounts": [SHM_MOUNT],
    }
    pod = {
        "metadata": {"labels": POD_LABELS, "annotations": NO_SIDECAR},
        "spec": {"containers": [container], "volumes": [_shm_volume(job)], **_placement(job)},
    }
    replica = {"restartPolicy": "OnFailure", "template": pod}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "lad"}},
        "spec": {
            "nprocPerNode": str(job.gpus_per_node),
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 2},
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, **replica},
                "Worker": {"replicas": job.num_nodes - 1, **replica},
            },
        },
    }


@dataclass(frozen=True)
class JobKind:
    """What differs between the two kinds: the API, the spec, the finished condition and rank 0's pod."""

    group: str
    version: str
    plural: str
    spec: Callable[..., dict]
    succeeded: str  # the condition type of a finished job
    rank0_selector: str  # label selector of rank 0's pod, {name} the job's
    container: str


KINDS = {
    "TrainJob": JobKind("trainer.kubeflow.org", "v1alpha1", "trainjobs", trainjob_spec, "Complete",
                        "jobset.sigs.k8s.io/jobset-name={name},batch.kubernetes.io/job-completion-index=0", "node"),
    "PyTorchJob": JobKind("kubeflow.org", "v1", "pytorchjobs", pytorchjob_spec, "Succeeded",
                          "training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master", "pytorch"),
}


def job_state(obj: dict) -> tuple[str, str]:
    """(state, message) from a job object: the newest true condition (Created, Running,
    Complete/Succeeded, Failed, ...), or Pending when there is none yet."""
    conditions = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    if not conditions:
        return "Pending", ""
    last = conditions[-1]
    return last["type"], last.get("message", "")


def submit_or_attach(custom_api, kind: str, spec: dict, *, log: Callable[[str], None] = print,
                     sleep: Callable[[float], None] = time.sleep, poll_s: float = 2.0) -> str:
    """Create the job; when one of that name exists (a retried step), follow it instead, unless it
    failed, in which case it is deleted and created anew. Returns "submitted", "attached" or "replaced"."""
    from kubernetes.client import ApiException

    k, meta = KINDS[kind], spec["metadata"]
    where = (k.group, k.version, meta["namespace"], k.plural)
    try:
        custom_api.create_namespaced_custom_object(*where, spec)
        return "submitted"
    except ApiException as err:
        if err.status != 409:
            raise LaunchError(f"cannot create {kind} {meta['namespace']}/{meta['name']}: {err.status} {err.reason}: {err.body}") from None
    state, message = job_state(custom_api.get_namespaced_custom_object(*where, meta["name"]))
    if state != "Failed":
        log(f"{kind} {meta['namespace']}/{meta['name']} exists ({state}): following it")
        return "attached"
    log(f"{kind} {meta['namespace']}/{meta['name']} failed before ({message or 'no reason given'}): replacing it")
    delete_job(custom_api, kind, meta["name"], meta["namespace"])
    while True:
        try:
            custom_api.get_namespaced_custom_object(*where, meta["name"])
        except ApiException as err:
            if err.status == 404:
                break
            raise
        sleep(poll_s)
    custom_api.create_namespaced_custom_object(*where, spec)
    return "replaced"


def delete_job(custom_api, kind: str, name: str, namespace: str) -> None:
    """Delete the job and, in the foreground, its pods; a job already gone is fine."""
    from kubernetes.client import ApiException

    k = KINDS[kind]
    try:
        custom_api.delete_namespaced_custom_object(k.group, k.version, namespace, k.plural, name,
                                                   body={"propagationPolicy": "Foreground"})
    except ApiException as err:
        if err.status != 404:
            raise


def wait_for_job(custom_api, core_api, kind: str, name: str, namespace: str, *, poll_s: float = 10.0,
                 log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep) -> None:
    """Follow the job to its end, streaming rank 0's log; LaunchError when it fails."""
    k = KINDS[kind]
    streamed = False
    while True:
        obj = custom_api.get_namespaced_custom_object(k.group, k.version, namespace, k.plural, name)
        state, message = job_state(obj)
        if state == k.succeeded:
            log(f"{kind} {namespace}/{name} succeeded")
            return
        if state == "Failed":
            raise LaunchError(f"{kind} {namespace}/{name} failed: {message or 'no reason given'} "
                              f"(kubectl -n {namespace} describe {kind.lower()} {name})")
        if not streamed and state in ("Running", "Created"):
            streamed = _stream_rank0_log(core_api, k, name, namespace, log)
            if streamed:
                continue
        sleep(poll_s)


def _stream_rank0_log(core_api, k: JobKind, name: str, namespace: str, log: Callable[[str], None]) -> bool:
    pods = core_api.list_namespaced_pod(namespace, label_selector=k.rank0_selector.format(name=name)).items
    if not pods or pods[0].status.phase == "Pending":
        return False
    stream = core_api.read_namespaced_pod_log(pods[0].metadata.name, namespace, container=k.container, follow=True,
                                              _preload_content=False)
    for line in stream.stream():
        log(line.decode(errors="replace").rstrip("\n"))
    return True


def _own_image(core_api, namespace: str) -> str:
    pod = core_api.read_namespaced_pod(os.environ["HOSTNAME"], namespace)
    return pod.spec.containers[0].image


def shared_uri(uri: str) -> str:
    """The S3 URI of an artifact under the pipeline root, where the job's pods can reach it: an
    s3:// root as it is, a minio:// root (a standard Kubeflow install's MinIO, the same S3 API at
    $AWS_ENDPOINT_URL) as s3:// with the same bucket and key."""
    if uri.startswith("s3://"):
        return uri
    if uri.startswith("minio://"):
        return "s3://" + uri.removeprefix("minio://")
    raise LaunchError(f"num_nodes > 1 needs an s3:// or minio:// pipeline root for the job's pods to share files; got {uri}")


def run_multinode(job: JobSettings, init_model: str, data: str, model_out: str, model_uri: str, settings: dict,
                  *, run_id: str = "") -> dict:
    """Train across ``job.num_nodes`` nodes; the trained model ends up at ``model_out``.

    ``init_model`` and ``data`` are this step's local input folders, ``model_uri`` the remote
    URI of its output artifact (the staging prefix goes next to it), ``run_id`` the KFP run's id
    (with ``settings["stage"]`` it names the job).
    """
    from kubernetes import client, config

    from lad.pipeline.steps import EVAL_FILE, TRAIN_FILE, rl_config
    from lad.storage import get_dir, put_bytes, put_dir, read_bytes
    from lad.tracking.pipeline_runs import sigterm_raises
    from lad.tracking.runs import StepTerminated

    staging = f"{shared_uri(model_uri).rstrip('/')}.job"
    put_dir(init_model, f"{staging}/init")
    put_dir(data, f"{staging}/data")
    has_eval = (Path(data) / EVAL_FILE).is_file()
    cfg = rl_config(f"{staging}/init", f"{staging}/data/{TRAIN_FILE}", f"{staging}/data/{EVAL_FILE}" if has_eval else None,
                    "/tmp/lad-rl", **settings)
    put_bytes(cfg.model_dump_json().encode(), f"{staging}/config.json")

    config.load_incluster_config()
    custom, core = client.CustomObjectsApi(), client.CoreV1Api()
    namespace = job.namespace or SA_NAMESPACE.read_text().strip()
    name = job_name(run_id, settings.get("stage", "train"))
    spec = KINDS[job.kind].spec(job, name=name, namespace=namespace, image=job.image or _own_image(core, namespace),
                                config_uri=f"{staging}/config.json", publish_uri=f"{staging}/out")
    with sigterm_raises():
        how = submit_or_attach(custom, job.kind, spec)
        print(f"{how} {job.kind} {namespace}/{name}: {job.num_nodes} nodes x {job.gpus_per_node} GPUs", flush=True)
        try:
            wait_for_job(custom, core, job.kind, name, namespace, poll_s=job.poll_s)
        except (StepTerminated, KeyboardInterrupt):
            delete_job(custom, job.kind, name, namespace)  # SIGTERM (a cancelled run), an interrupt: the job goes too
            print(f"deleted {job.kind} {namespace}/{name}", flush=True)
            raise  # a failed job stays for kubectl describe (a retry replaces it)
    get_dir(f"{staging}/out/model", model_out)
    return json.loads(read_bytes(f"{staging}/out/metrics.json"))
