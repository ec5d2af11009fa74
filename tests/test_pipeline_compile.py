"""The compiled pipelines: committed YAML is current, and it carries the cluster settings
(GPUs, shared memory, secrets, placement, retries, caching) on the right tasks and every
parameter the Kubeflow UI shows."""

import json
import re
from pathlib import Path

import pytest
import yaml

from lad.pipeline.compile import COMPILED_DIR, PIPELINES, compile_pipeline, stale

TRAINING_PARAMETERS = {
    "base_model", "datasets", "sft_steps", "sft_data", "sft_lr", "sft_batch_size", "sft_problems", "sft_heldout_problems", "objective",
    "compare_objective", "divergence", "kappa", "group_size", "lr", "min_lr_ratio", "mask_truncated", "steps", "prompts_per_step",
    "mini_batch_size", "micro_batch_size", "max_new_tokens", "rollout_engine", "train_engine",
    "train_eval_prompts", "train_preset", "train_overrides", "reward_functions", "checkpoint_every", "eval_benchmarks", "eval_k",
    "eval_limit", "eval_max_new_tokens", "eval_temperature", "registered_model_name",
    "promotion_metric", "promotion_margin", "promotion_min_score", "sandbox_url", "benchmarks_dir", "mlflow_experiment", "seed",
    "num_nodes",
    "gpus_per_node", "gpu_type", "gpu_node_selector", "gpu_tolerations", "s3_secret", "mlflow_secret",
    "hf_secret", "image_pull_secret", "multinode_job", "cpu_request", "cpu_limit", "memory_request", "memory_limit",
    "gpu_cpu_request", "gpu_cpu_limit", "gpu_memory_request", "gpu_memory_limit",
}
RETRAINING_PARAMETERS = (TRAINING_PARAMETERS - {"sft_steps", "sft_data", "sft_lr", "sft_batch_size", "sft_problems", "sft_heldout_problems",
                                               "compare_objective"}) | {"new_data_uri"}
GPU_TASKS = {
    "training": {"sft-warmup", "lad-train", "evaluate", "evaluate-2", "lad-train-2", "evaluate-3"},
    "retraining": {"lad-train", "evaluate", "evaluate-2"},
}


def container_tasks(spec: dict) -> dict[str, dict]:
    """Every task that runs a container, at the top level or inside a condition's branch."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {name: body for dag in dags for name, body in dag["tasks"].items()
            if "executorLabel" in spec["components"][body["componentRef"]["name"]]}


def plain(obj):
    """Inside a condition's branch the pipeline's parameters reach a task as pipelinechannel--<name>."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj.removeprefix("pipelinechannel--") if isinstance(obj, str) else obj


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    out = tmp_path_factory.mktemp("compiled")
    docs = {}
    for name in PIPELINES:
        spec, platform = yaml.safe_load_all(compile_pipeline(name, out / f"{name}.yaml").read_text())
        docs[name] = (spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"])
    return docs


def test_committed_yaml_is_current():
    assert stale(COMPILED_DIR) == [], "run: lad pipeline compile --placeholder --output pipelines/compiled"


def test_stale_reports_a_changed_file(tmp_path):
    for name in PIPELINES:
        (tmp_path / f"{name}.yaml").write_text((COMPILED_DIR / f"{name}.yaml").read_text())
    (tmp_path / "retraining.yaml").write_text((COMPILED_DIR / "retraining.yaml").read_text().replace("lad-policy", "other"))
    assert stale(tmp_path) == ["retraining"]


@pytest.mark.parametrize("name,expected", [("training", TRAINING_PARAMETERS), ("retraining", RETRAINING_PARAMETERS)])
def test_every_ui_knob_is_a_pipeline_parameter(compiled, name, expected):
    spec, _ = compiled[name]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == expected
    assert all(p.get("description") for p in params.values()), "every parameter is described in the UI"
    assert params["objective"]["defaultValue"] == "lad"
    assert params["divergence"]["defaultValue"] == "js"
    assert params["kappa"]["defaultValue"] == 4.0
    assert params["promotion_metric"]["defaultValue"] == "all/avg@k"
    assert params["promotion_min_score"]["defaultValue"] == 0.01, "a gate with a floor by default"
    assert params["gpu_tolerations"]["parameterType"] == "LIST"
    assert params["gpu_node_selector"]["parameterType"] == "STRUCT"


@pytest.mark.parametrize("name", ["training", "retraining"])
def test_gpu_shm_and_placement_on_the_gpu_tasks_only(compiled, name):
    spec, executors = compiled[name]
    tasks = container_tasks(spec)
    for task, body in tasks.items():
        executor = spec["components"][body["componentRef"]["name"]]["executorLabel"]
        resources = spec["deploymentSpec"]["executors"][executor]["container"].get("resources", {})
        k8s = plain(executors.get(executor, {}))
        if task in GPU_TASKS[name]:
            # a training step holds no GPU when it only launches a multi-node job: training_pod_gpus says how many
            count = "training-pod-gpus-Output" if task.startswith("lad-train") else "gpus_per_node"
            assert resources["accelerator"] == {
                "resourceCount": f"{{{{$.inputs.parameters['pipelinechannel--{count}']}}}}",
                "resourceType": "{{$.inputs.parameters['pipelinechannel--gpu_type']}}",
            }, task
            if task == "lad-train":
                fed = body["inputs"]["parameters"]["pipelinechannel--training-pod-gpus-Output"]
                assert fed == {"taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "training-pod-gpus"}}
            assert k8s["emptyDirMounts"] == [
                {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi", "volumeName": "dshm"},
                {"mountPath": "/var/cache/lad", "sizeLimit": "200Gi", "volumeName": "model-cache"},
            ]
            assert k8s["nodeSelector"] == {"nodeSelectorJson": {"componentInputParameter": "gpu_node_selector"}}
            assert k8s["tolerations"] == [{"tolerationJson": {"componentInputParameter": "gpu_tolerations"}}]
        else:
            assert "accelerator" not in resources, task
            assert not {"nodeSelector", "tolerations"} & set(k8s), task
            assert k8s.get("emptyDirMounts", []) == ([{"mountPath": "/var/cache/lad", "sizeLimit": "200Gi", "volumeName": "model-cache"}]
                                                     if task == "champion-model" else []), task


@pytest.mark.parametrize("name", ["training", "retraining"])
def test_every_input_a_task_names_is_one_its_dag_has(compiled, name):
    """A task inside a condition branch takes the pipeline's parameters (and other tasks' outputs)
    through the branch's own inputs: each one it names, for its resources too, must be declared there."""
    spec, _ = compiled[name]
    dags = {"root": spec["root"], **{k: c for k, c in spec["components"].items() if "dag" in c}}
    for dag_name, dag in dags.items():
        declared = set(dag.get("inputDefinitions", {}).get("parameters", {}))
        for task, body in dag["dag"]["tasks"].items():
            for source in body.get("inputs", {}).get("parameters", {}).values():
                if "componentInputParameter" in source:
                    assert source["componentInputParameter"] in declared, (dag_name, task, source)


@pytest.mark.parametrize("name", ["training", "retraining"])
def test_every_task_has_cpu_and_memory_requests_and_limits_from_parameters(compiled, name):
    spec, executors = compiled[name]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {p: params[p]["defaultValue"] for p in params if p.endswith(("cpu_request", "cpu_limit", "memory_request", "memory_limit"))} == {
        "cpu_request": "1", "cpu_limit": "4", "memory_request": "4Gi", "memory_limit": "16Gi",
        "gpu_cpu_request": "8", "gpu_cpu_limit": "32", "gpu_memory_request": "64Gi", "gpu_memory_limit": "256Gi",
    }
    for task, body in container_tasks(spec).items():
        executor = spec["components"][body["componentRef"]["name"]]["executorLabel"]
        resources = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
        prefix = "gpu_" if task in GPU_TASKS[name] else ""
        assert {k: v for k, v in resources.items() if k != "accelerator"} == {
            f"resource{kind}": f"{{{{$.inputs.parameters['pipelinechannel--{prefix}{param}']}}}}"
            for kind, param in (("CpuRequest", "cpu_request"), ("CpuLimit", "cpu_limit"),
                                ("MemoryRequest", "memory_request"), ("MemoryLimit", "memory_limit"))
        }, task
        # the task feeds them from the pipeline's parameters (inside a branch through the condition's own inputs)
        fed = plain(body["inputs"]["parameters"])
        assert fed[f"pipelinechannel--{prefix}cpu_limit"] == {"componentInputParameter": f"{prefix}cpu_limit"}, task
        assert plain(executors[executor]["imagePullSecret"]) == [{"secretNameParameter": {"componentInputParameter": "image_pull_secret"}}]


@pytest.mark.parametrize("name", ["training", "retraining"])
def test_model_loading_steps_get_the_model_cache_and_an_optional_hf_token(compiled, name):
    spec, executors = compiled[name]
    loaders = GPU_TASKS[name] | ({"champion-model"} if name == "retraining" else set())
    for task, body in container_tasks(spec).items():
        executor = spec["components"][body["componentRef"]["name"]]["executorLabel"]
        env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][executor]["container"].get("env", [])}
        hf = [e for e in plain(executors[executor])["secretAsEnv"] if e["secretNameParameter"] == {"componentInputParameter": "hf_secret"}]
        if task in loaders:
            assert env == {"HF_HOME": "/var/cache/lad/huggingface", "LAD_CACHE_DIR": "/var/cache/lad/storage"}, task
            assert hf == [{"keyToEnv": [{"envVar": "HF_TOKEN", "secretKey": "HF_TOKEN"}], "optional": True,
                           "secretNameParameter": {"componentInputParameter": "hf_secret"}}], task
        else:
            assert env == {} and hf == [], task


def test_a_model_cache_pvc_replaces_the_emptydir(tmp_path):
    from lad.pipeline.compile import compile_all

    compile_all(tmp_path, model_cache_pvc="lad-models", placeholder=True)
    _, platform = yaml.safe_load_all((tmp_path / "training.yaml").read_text())
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-lad-train"]
    assert train["pvcMount"] == [{"constant": "lad-models", "mountPath": "/var/cache/lad", "pvcNameParameter": {"runtimeValue": {"constant": "lad-models"}}}]
    assert [m["volumeName"] for m in train["emptyDirMounts"]] == ["dshm"]


# Placeholders KFP resolves per run ({{$.pipeline_job_uuid}}, {{$.pipeline_job_name}}, ...).
RUN_PLACEHOLDER = re.compile(r"\{\{\$\.pipeline_(job|task)_[a-z_]+\}\}")


def cache_key(spec: dict, task: str, run: dict) -> str:
    """What KFP's driver hashes into a task's cache key (backend/src/v2/cacheutils: the task's
    input parameters and artifacts, its outputs' types, the container's image, command and
    arguments), resolved as in a run with ``run``'s id and arguments."""
    body = spec["root"]["dag"]["tasks"][task]
    component = spec["components"][body["componentRef"]["name"]]
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    defaults = {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    params = {}
    for name, source in body.get("inputs", {}).get("parameters", {}).items():
        if "componentInputParameter" in source:
            params[name] = run["arguments"].get(source["componentInputParameter"], defaults[source["componentInputParameter"]])
        else:
            params[name] = source
    key = {"parameters": params, "artifacts": body.get("inputs", {}).get("artifacts", {}),
           "outputs": component.get("outputDefinitions", {}), "image": container["image"],
           "command": container["command"], "args": container["args"]}
    return RUN_PLACEHOLDER.sub(lambda m: f"{m.group(0)}={run['id']}", json.dumps(key, sort_keys=True))


def runs_of(arguments: dict) -> tuple[dict, dict]:
    return {"id": "9f3c-run-one", "arguments": arguments}, {"id": "77ab-run-two", "arguments": arguments}


@pytest.mark.parametrize("name,tasks", [("training", ["data-prep", "sft-warmup"]), ("retraining", ["data-prep"])])
def test_equal_runs_have_equal_cache_keys(compiled, name, tasks):
    spec, executors = compiled[name]
    one, two = runs_of({"sft_steps": 100, "base_model": "s3://models/qwen2.5-0.5b"})
    for task in tasks:
        assert cache_key(spec, task, one) == cache_key(spec, task, two), task
    assert cache_key(spec, "data-prep", one) != cache_key(spec, "data-prep", {**one, "arguments": {"seed": 7}})
    # the run reaches every step from the pod's metadata, and no run placeholder is left anywhere in the spec
    assert not RUN_PLACEHOLDER.search(json.dumps(spec))
    for executor, k8s in executors.items():
        assert k8s["fieldPathAsEnv"] == [
            {"fieldPath": "metadata.labels['pipeline/runid']", "name": "LAD_PIPELINE_RUN_ID"},
            {"fieldPath": "metadata.annotations['pipelines.kubeflow.org/run_name']", "name": "LAD_PIPELINE_RUN_NAME"},
        ], executor


def test_a_run_id_input_would_make_every_cache_key_differ(tmp_path):
    """The check above can fail: a step fed {{$.pipeline_job_uuid}}, as the steps were, misses the cache every run."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def step(run_id: str, seed: int):
        print(run_id, seed)

    @dsl.pipeline(name="keyed")
    def keyed(seed: int = 0):
        step(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, seed=seed)

    compiler.Compiler().compile(keyed, str(tmp_path / "keyed.yaml"))
    spec = yaml.safe_load((tmp_path / "keyed.yaml").read_text())
    one, two = runs_of({})
    assert cache_key(spec, "step", one) != cache_key(spec, "step", two)


@pytest.mark.parametrize("name", ["training", "retraining"])
def test_credentials_come_from_secrets_on_every_task(compiled, name):
    spec, executors = compiled[name]
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    for executor, k8s in plain(executors).items():
        by_secret = {}
        for entry in k8s["secretAsEnv"]:
            source = entry["secretNameParameter"].get("componentInputParameter") or entry["secretName"]
            for pair in entry["keyToEnv"]:
                by_secret.setdefault(source, {})[(pair["secretKey"], pair["envVar"])] = entry["optional"]
        def same(required, optional):
            return {**{(k, k): False for k in required}, **{(k, k): True for k in optional}}

        assert by_secret["s3_secret"] == same(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
                                              ["AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"]), executor
        assert by_secret["mlflow_secret"] == same(["MLFLOW_TRACKING_URI"], ["MLFLOW_TRACKING_USERNAME",
                                                  "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"]), executor
        uses_sandbox = any(x in executor for x in ("lad-train", "evaluate", "code-execution"))
        # the Secret and key that images/sandbox/sandbox.yaml reads too
        assert by_secret.get("lad-sandbox-token") == ({("token", "LAD_SANDBOX_TOKEN"): True} if uses_sandbox else None), executor


@pytest.mark.parametrize("name", ["training", "retraining"])
def test_retries_caching_and_images(compiled, name):
    spec, _ = compiled[name]
    tasks = container_tasks(spec)
    for task, body in tasks.items():
        assert body["retryPolicy"]["maxRetryCount"] == 2, task
        stateful = task in ("register-model", "champion-model")
        assert body["cachingOptions"].get("enableCache", False) is (not stateful), task
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.invalid/lad/lad-python:unset", "registry.invalid/lad/lad-trainer:unset"}
    for executor in spec["deploymentSpec"]["executors"].values():
        assert "pip install" not in " ".join(executor["container"]["command"]), "the images carry lad and kfp"


def test_retraining_compares_challenger_and_champion(compiled):
    spec, _ = compiled["retraining"]
    tasks = spec["root"]["dag"]["tasks"]
    artifacts = tasks["register-model"]["inputs"]["artifacts"]
    assert artifacts["evaluation"]["taskOutputArtifact"]["producerTask"] == "evaluate"
    assert artifacts["champion_evaluation"]["taskOutputArtifact"]["producerTask"] == "evaluate-2"
    assert tasks["evaluate-2"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "champion-model"
    assert tasks["lad-train"]["inputs"]["artifacts"]["init_model"]["taskOutputArtifact"]["producerTask"] == "champion-model"
    assert tasks["data-prep"]["inputs"]["parameters"]["extra_train_uri"] == {"componentInputParameter": "new_data_uri"}


def test_compile_with_a_registry_names_this_commits_images(tmp_path):
    from lad.images import image_tag
    from lad.pipeline.compile import check_submittable, compile_all

    paths = compile_all(tmp_path / "out", registry="registry.example.com/team/", root=tmp_path)
    assert sorted(p.name for p in paths) == ["retraining.yaml", "training.yaml"]
    spec = next(yaml.safe_load_all(Path(tmp_path / "out" / "training.yaml").read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    tag = image_tag()
    assert re.fullmatch(r"0\.1\.0-g[0-9a-f]{12}(-dirty)?", tag)
    assert images == {f"registry.example.com/team/lad-python:{tag}", f"registry.example.com/team/lad-trainer:{tag}"}
    assert check_submittable(tmp_path / "out" / "training.yaml")


def test_after_a_push_the_images_are_named_by_digest(tmp_path):
    from lad.images import image_tag, record_push
    from lad.pipeline.compile import compile_all

    digest = "sha256:" + "ab" * 32
    record_push(tmp_path, "registry.example.com/team", image_tag(), {"base": digest})
    compile_all(tmp_path / "out", registry="registry.example.com/team", root=tmp_path)
    spec = next(yaml.safe_load_all(Path(tmp_path / "out" / "training.yaml").read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {f"registry.example.com/team/lad-python@{digest}", f"registry.example.com/team/lad-trainer:{image_tag()}"}
    # a record of another registry (or commit) is not this one's
    compile_all(tmp_path / "other", registry="ghcr.io/acme", root=tmp_path)
    assert "@sha256" not in (tmp_path / "other" / "training.yaml").read_text()


def test_compiling_without_a_registry_names_the_fix(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "lad.cli", "pipeline", "compile", "--output", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert " ".join(done.stderr.split()) == ("error: no image registry: pass --registry REGISTRY, the registry `lad images build "
                                             "--push REGISTRY` pushed the images to (e.g. --registry ghcr.io/acme/lad)")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_the_committed_placeholder_yaml_is_never_submitted_as_is(name):
    from lad.pipeline.compile import CompileError, check_submittable

    with pytest.raises(CompileError, match=r"names placeholder images \(registry.invalid/lad/lad-python:unset, "
                                           r"registry.invalid/lad/lad-trainer:unset\) .* lad pipeline compile --registry REGISTRY$"):
        check_submittable(COMPILED_DIR / f"{name}.yaml")


def test_training_evaluates_the_warm_start_and_trains_a_baseline_only_when_asked(compiled):
    spec, _ = compiled["training"]
    tasks = container_tasks(spec)

    def producer(task: str, artifact: str) -> str:
        """The task an input artifact comes from (into a branch, as pipelinechannel--<task>-<output>)."""
        source = tasks[task]["inputs"]["artifacts"][artifact]
        if "taskOutputArtifact" in source:
            return source["taskOutputArtifact"]["producerTask"]
        return next(t for t in tasks if plain(source["componentInputArtifact"]).startswith(f"{t}-")
                    and plain(source["componentInputArtifact"])[len(t) + 1:] in ("model", "results"))

    assert producer("evaluate", "model") == "lad-train" and producer("evaluate-2", "model") == "sft-warmup"
    assert producer("register-model", "baseline_evaluation") == "evaluate-2"
    assert producer("lad-train-2", "init_model") == "sft-warmup" and producer("evaluate-3", "model") == "lad-train-2"
    assert plain(tasks["lad-train-2"]["inputs"]["parameters"]["objective"]) == {"componentInputParameter": "compare_objective"}
    assert [producer("compare-evaluations", a) for a in ("baseline", "trained", "other")] == ["evaluate-2", "evaluate", "evaluate-3"]
    assert sorted(tasks["compare-evaluations-2"]["inputs"]["artifacts"]) == ["baseline", "trained"]
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    assert branches["condition-2"]["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--compare_objective'] != ''"
    assert branches["condition-3"]["triggerPolicy"]["condition"] == "!(inputs.parameter_values['pipelinechannel--compare_objective'] != '')"
