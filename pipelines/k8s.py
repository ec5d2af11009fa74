"""Cluster settings of the tasks (kfp-kubernetes): GPUs, node placement, shared memory,
credentials from Secrets, retries. The local runner ignores all of them."""

from kfp import kubernetes
from kfp.dsl import PipelineTask

SHM_SIZE = "16Gi"  # NCCL and DataLoader workers use /dev/shm; the container default is 64 MiB
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_OPTIONAL_KEYS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
MLFLOW_KEYS = ("MLFLOW_TRACKING_URI",)
MLFLOW_OPTIONAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# Optional: the sandbox's bearer token, the Secret that images/sandbox/sandbox.yaml reads too.
SANDBOX_SECRET, SANDBOX_TOKEN_KEY = "lad-sandbox-token", "token"


def with_credentials(task: PipelineTask, s3_secret, mlflow_secret) -> PipelineTask:
    """S3 and MLflow credentials as environment variables, from Secrets whose keys are the
    variable names (kubectl create secret generic lad-s3 --from-literal=AWS_ACCESS_KEY_ID=...)."""
    kubernetes.use_secret_as_env(task, s3_secret, {k: k for k in S3_KEYS})
    kubernetes.use_secret_as_env(task, s3_secret, {k: k for k in S3_OPTIONAL_KEYS}, optional=True)
    kubernetes.use_secret_as_env(task, mlflow_secret, {k: k for k in MLFLOW_KEYS})
    kubernetes.use_secret_as_env(task, mlflow_secret, {k: k for k in MLFLOW_OPTIONAL_KEYS}, optional=True)
    return task


def with_sandbox_token(task: PipelineTask) -> PipelineTask:
    kubernetes.use_secret_as_env(task, SANDBOX_SECRET, {SANDBOX_TOKEN_KEY: "LAD_SANDBOX_TOKEN"}, optional=True)
    return task


def on_gpus(task: PipelineTask, gpu_type, gpus, node_selector, tolerations) -> PipelineTask:
    """GPUs of ``gpu_type`` (e.g. nvidia.com/gpu), a node selector and tolerations (pipeline
    parameters, so the UI sets them) and a memory-backed /dev/shm."""
    task.set_accelerator_type(gpu_type).set_accelerator_limit(gpus)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE)
    return task


def retried(task: PipelineTask, times: int = 2) -> PipelineTask:
    """Retry transient failures (pre-empted nodes, S3 or MLflow hiccups) with backoff."""
    return task.set_retry(num_retries=times, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="3600s")
