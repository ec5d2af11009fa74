"""Multi-node RL training: the lad_train step submits a Kubeflow Trainer PyTorchJob that runs the
DeepSpeed trainer under torchrun on every node, streams the master's log, and fails when the job
fails.

The step first publishes its inputs (starting model, data) and the trainer's config under a
staging prefix next to its output artifact (``lad.storage``, with manifests), the job's rank 0
publishes the trained model there, and the step copies it into its output artifact. The job
talks to the Kubernetes API through the ``kubernetes`` client (the PyTorchJob CRD of the
Kubeflow training operator, ``kubeflow.org/v1``), from inside the pipeline pod.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel, Field, field_validator

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
CONTAINER = "pytorch"  # the training operator finds the training container by this name
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LaunchError(RuntimeError):
    """The job could not be submitted, or it failed; the message names the job and the reason."""


class JobSettings(BaseModel):
    """How the PyTorchJob is shaped and placed."""

    num_nodes: int = Field(ge=2, description="pods (nodes) of the job: one master, num_nodes - 1 workers")
    gpus_per_node: int = Field(1, ge=1, description="GPUs of each pod; torchrun starts one process per GPU")
    gpu_type: str = Field("nvidia.com/gpu", min_length=1, description="the GPU resource name")
    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels the pods require")
    tolerations: list[dict] = Field(default_factory=list, description="tolerations of the pods")
    s3_secret: str = Field("lad-s3", description="Secret whose keys become environment variables (S3 credentials)")
    mlflow_secret: str = Field("lad-mlflow", description="Secret whose keys become environment variables (MLflow)")
    image: str = Field("", description="image of the pods; empty: the image of the pod that submits the job")
    namespace: Optional[str] = Field(None, description="None: the submitting pod's namespace")
    shm_size: str = Field("16Gi", description="size of the memory-backed /dev/shm (NCCL)")
    poll_s: float = Field(10.0, gt=0, description="seconds between job status checks")

    @field_validator("node_selector", "tolerations", mode="before")
    @classmethod
    def _json_text(cls, v: Any) -> Any:
        # Pipeline parameters of struct type may arrive as their JSON text.
        return json.loads(v) if isinstance(v, str) else v


def job_name(prefix: str = "lad-train") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def pytorchjob_spec(job: JobSettings, *, name: str, namespace: str, image: str, config_uri: str, publish_uri: str) -> dict:
    """The PyTorchJob manifest: master + workers, each ``torchrun -m lad.pipeline.worker``.

    The operator injects torchrun's rendezvous settings (PET_NNODES, PET_NODE_RANK,
    PET_MASTER_ADDR, PET_MASTER_PORT) from ``nprocPerNode`` and the replica counts.
    """
    container = {
        "name": CONTAINER,
        "image": image,
        "command": ["torchrun", f"--nnodes={job.num_nodes}", f"--nproc-per-node={job.gpus_per_node}",
                    "-m", "lad.pipeline.worker", "--config", config_uri, "--publish", publish_uri],
        "resources": {"limits": {job.gpu_type: job.gpus_per_node}},
        "envFrom": [{"secretRef": {"name": job.s3_secret}}, {"secretRef": {"name": job.mlflow_secret}}],
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    pod = {
        "metadata": {"labels": {"app.kubernetes.io/part-of": "lad", "app.kubernetes.io/component": "rl-training"}},
        "spec": {
            "containers": [container],
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": job.shm_size}}],
            **({"nodeSelector": job.node_selector} if job.node_selector else {}),
            **({"tolerations": job.tolerations} if job.tolerations else {}),
        },
    }
    replica = {"restartPolicy": "OnFailure", "template": pod}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
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


def job_state(obj: dict) -> tuple[str, str]:
    """(state, message) from a PyTorchJob object: the newest true condition (Created, Running,
    Restarting, Succeeded, Failed), or Pending when there is none yet."""
    conditions = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    if not conditions:
        return "Pending", ""
    last = conditions[-1]
    return last["type"], last.get("message", "")


def wait_for_job(custom_api, core_api, name: str, namespace: str, *, poll_s: float = 10.0,
                 log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep) -> None:
    """Follow the job to its end, streaming the master pod's log; LaunchError when it fails."""
    streamed = False
    while True:
        obj = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        state, message = job_state(obj)
        if state == "Succeeded":
            log(f"PyTorchJob {namespace}/{name} succeeded")
            return
        if state == "Failed":
            raise LaunchError(f"PyTorchJob {namespace}/{name} failed: {message or 'no reason given'} "
                              f"(kubectl -n {namespace} describe pytorchjob {name})")
        if state == "Running" and not streamed:
            streamed = _stream_master_log(core_api, name, namespace, log)
            continue
        sleep(poll_s)


def _stream_master_log(core_api, name: str, namespace: str, log: Callable[[str], None]) -> bool:
    selector = f"training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master"
    pods = core_api.list_namespaced_pod(namespace, label_selector=selector).items
    if not pods or pods[0].status.phase == "Pending":
        return False
    stream = core_api.read_namespaced_pod_log(pods[0].metadata.name, namespace, container=CONTAINER, follow=True,
                                              _preload_content=False)
    for line in stream.stream():
        log(line.decode(errors="replace").rstrip("\n"))
    return True


def _own_image(core_api, namespace: str) -> str:
    pod = core_api.read_namespaced_pod(os.environ["HOSTNAME"], namespace)
    return pod.spec.containers[0].image


def run_multinode(job: JobSettings, init_model: str, data: str, model_out: str, model_uri: str, settings: dict) -> dict:
    """Train across ``job.num_nodes`` nodes; the trained model ends up at ``model_out``.

    ``init_model`` and ``data`` are this step's local input folders, ``model_uri`` the remote
    URI of its output artifact (the staging prefix goes next to it).
    """
    from kubernetes import client, config

    from lad.pipeline.steps import EVAL_FILE, TRAIN_FILE, rl_config
    from lad.storage import get_dir, put_bytes, put_dir, read_bytes

    if not model_uri.startswith("s3://"):
        raise LaunchError(f"num_nodes > 1 needs an s3:// pipeline root for the job's pods to share files; got {model_uri}")
    staging = f"{model_uri.rstrip('/')}.job"
    put_dir(init_model, f"{staging}/init")
    put_dir(data, f"{staging}/data")
    has_eval = (Path(data) / EVAL_FILE).is_file()
    cfg = rl_config(f"{staging}/init", f"{staging}/data/{TRAIN_FILE}", f"{staging}/data/{EVAL_FILE}" if has_eval else None,
                    "/tmp/lad-rl", **settings)
    put_bytes(cfg.model_dump_json().encode(), f"{staging}/config.json")

    config.load_incluster_config()
    custom, core = client.CustomObjectsApi(), client.CoreV1Api()
    namespace = job.namespace or SA_NAMESPACE.read_text().strip()
    name = job_name()
    spec = pytorchjob_spec(job, name=name, namespace=namespace, image=job.image or _own_image(core, namespace),
                           config_uri=f"{staging}/config.json", publish_uri=f"{staging}/out")
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, spec)
    except client.ApiException as err:
        raise LaunchError(f"cannot create PyTorchJob {namespace}/{name}: {err.status} {err.reason}: {err.body}") from None
    print(f"submitted PyTorchJob {namespace}/{name}: {job.num_nodes} nodes x {job.gpus_per_node} GPUs", flush=True)
    wait_for_job(custom, core, name, namespace, poll_s=job.poll_s)
    get_dir(f"{staging}/out/model", model_out)
    return json.loads(read_bytes(f"{staging}/out/metrics.json"))
