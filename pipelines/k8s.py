"""Cluster settings of the tasks (kfp-kubernetes): GPUs, node placement, shared memory, CPU and
memory, the model cache, credentials from Secrets, the image pull secret, which run a pod belongs
to, retries. The local runner ignores all of them."""

import os

from kfp import kubernetes
from kfp.dsl import PipelineTask
from kfp.dsl.pipeline_channel import PipelineChannel

from lad.pipeline.identity import RUN_ID_ENV, RUN_ID_FIELD, RUN_NAME_ENV, RUN_NAME_FIELD

SHM_SIZE = "16Gi"  # NCCL and DataLoader workers use /dev/shm; the container default is 64 MiB
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_OPTIONAL_KEYS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
MLFLOW_KEYS = ("MLFLOW_TRACKING_URI",)
MLFLOW_OPTIONAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
HF_KEYS = ("HF_TOKEN",)  # gated Hugging Face models (hf://org/name)
# Where model-loading steps keep downloads: the Hugging Face hub cache and lad.storage's cache of
# s3:// folders. An emptyDir (scratch beside the node's disk, gone with the pod) unless
# `lad pipeline compile --model-cache-pvc NAME` names a PersistentVolumeClaim that keeps them between runs.
MODEL_CACHE_MOUNT = "/var/cache/lad"
MODEL_CACHE_SIZE = "200Gi"
MODEL_CACHE_PVC_ENV = "LAD_MODEL_CACHE_PVC"
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


def with_run_identity(task: PipelineTask) -> PipelineTask:
    """The KFP run's id (and name) as environment variables from the pod's own metadata, so that
    they never enter a task's inputs and with them its cache key (lad.pipeline.identity)."""
    kubernetes.use_field_path_as_env(task, RUN_ID_ENV, RUN_ID_FIELD)
    kubernetes.use_field_path_as_env(task, RUN_NAME_ENV, RUN_NAME_FIELD)
    return task


def declared(task: PipelineTask, *values) -> PipelineTask:
    """KFP 2.17 writes a resource's pipeline channel into the task's container spec but not into
    its channel inputs, and those are what the compiler hands down into a condition branch
    (kfp/compiler/compiler_utils.get_inputs_for_all_groups): a task inside a branch would name an
    input its branch does not have. Declare the channels among the task's inputs."""
    for value in values:
        if isinstance(value, PipelineChannel) and not any(c.pattern == value.pattern for c in task.channel_inputs):
            task.channel_inputs.append(value)
    return task


def with_resources(task: PipelineTask, cpu_request, cpu_limit, memory_request, memory_limit) -> PipelineTask:
    """CPU and memory requests and limits (pipeline parameters, e.g. "4", "500m", "16Gi")."""
    task.set_cpu_request(cpu_request).set_cpu_limit(cpu_limit).set_memory_request(memory_request).set_memory_limit(memory_limit)
    return declared(task, cpu_request, cpu_limit, memory_request, memory_limit)


def with_pull_secret(task: PipelineTask, secret) -> PipelineTask:
    """The image pull secret of a private registry (a Secret that does not exist is skipped by the kubelet)."""
    return kubernetes.set_image_pull_secrets(task, [secret])


def with_model_cache(task: PipelineTask, hf_secret) -> PipelineTask:
    """The model cache volume, the caches pointed at it, and HF_TOKEN from an optional Secret."""
    pvc = os.environ.get(MODEL_CACHE_PVC_ENV, "")
    if pvc:
        kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=MODEL_CACHE_MOUNT)
    else:
        kubernetes.empty_dir_mount(task, volume_name="model-cache", mount_path=MODEL_CACHE_MOUNT, size_limit=MODEL_CACHE_SIZE)
    task.set_env_variable("HF_HOME", f"{MODEL_CACHE_MOUNT}/huggingface")
    task.set_env_variable("LAD_CACHE_DIR", f"{MODEL_CACHE_MOUNT}/storage")
    kubernetes.use_secret_as_env(task, hf_secret, {k: k for k in HF_KEYS}, optional=True)
    return task


def with_sandbox_token(task: PipelineTask) -> PipelineTask:
    kubernetes.use_secret_as_env(task, SANDBOX_SECRET, {SANDBOX_TOKEN_KEY: "LAD_SANDBOX_TOKEN"}, optional=True)
    return task


def on_gpus(task: PipelineTask, gpu_type, gpus, node_selector, tolerations) -> PipelineTask:
    """GPUs of ``gpu_type`` (e.g. nvidia.com/gpu), a node selector and tolerations (pipeline
    parameters, so the UI sets them) and a memory-backed /dev/shm."""
    task.set_accelerator_type(gpu_type).set_accelerator_limit(gpus)
    declared(task, gpu_type, gpus)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE)
    return task


def retried(task: PipelineTask, times: int = 2) -> PipelineTask:
    """Retry transient failures (pre-empted nodes, S3 or MLflow hiccups) with backoff."""
    return task.set_retry(num_retries=times, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="3600s")


def apply_cluster_settings(tasks: list, *, gpu: list, sandbox: list, models: list, secrets: dict, placement: dict,
                           cpu_resources: tuple, gpu_resources: tuple, image_pull_secret, training: list = (),
                           training_gpus=None) -> None:
    """Every cluster setting on a pipeline's tasks: credentials, run identity, pull secret, retries
    and resources on all; GPUs and placement on ``gpu``; the sandbox token on ``sandbox``; the model
    cache and HF_TOKEN on ``models``. ``secrets``: s3, mlflow and hf Secret names; ``placement``:
    gpu_type, gpus, node_selector, tolerations; the resources: (cpu request, cpu limit, memory
    request, memory limit) of CPU tasks and of GPU tasks. The ``training`` tasks (among ``gpu``)
    hold ``training_gpus`` GPUs instead (an upstream task's output: none when they launch a
    multi-node job)."""
    on_gpu, trains = {id(t) for t in gpu}, {id(t) for t in training}
    for task in tasks:
        with_credentials(task, secrets["s3"], secrets["mlflow"])
        with_run_identity(task)
        with_pull_secret(task, image_pull_secret)
        with_resources(task, *(gpu_resources if id(task) in on_gpu else cpu_resources))
        retried(task)
    for task in gpu:
        gpus = training_gpus if id(task) in trains else placement["gpus"]
        on_gpus(task, placement["gpu_type"], gpus, placement["node_selector"], placement["tolerations"])
    for task in sandbox:
        with_sandbox_token(task)
    for task in models:
        with_model_cache(task, secrets["hf"])
