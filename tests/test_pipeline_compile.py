"""The compiled pipelines: committed YAML is current, and it carries the cluster settings
(GPUs, shared memory, secrets, placement, retries, caching) on the right tasks and every
parameter the Kubeflow UI shows."""

from pathlib import Path

import pytest
import yaml

from lad.pipeline.compile import COMPILED_DIR, PIPELINES, compile_pipeline, stale

TRAINING_PARAMETERS = {
    "base_model", "datasets", "sft_steps", "sft_data", "sft_lr", "sft_batch_size", "sft_problems", "sft_heldout_problems", "objective",
    "compare_objective", "divergence", "kappa", "group_size", "lr", "steps", "prompts_per_step", "mini_batch_size",
    "micro_batch_size", "max_new_tokens", "rollout_engine", "train_engine",
    "train_eval_prompts", "train_preset", "train_overrides", "reward_functions", "checkpoint_every", "eval_benchmarks", "eval_k", "eval_limit", "eval_max_new_tokens", "eval_temperature", "registered_model_name",
    "promotion_metric", "promotion_margin", "sandbox_url", "benchmarks_dir", "mlflow_experiment", "seed", "num_nodes",
    "gpus_per_node", "gpu_type", "gpu_node_selector", "gpu_tolerations", "s3_secret", "mlflow_secret",
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
    assert stale(COMPILED_DIR) == [], "run: lad pipeline compile --output pipelines/compiled"


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
            assert resources["accelerator"] == {
                "resourceCount": "{{$.inputs.parameters['pipelinechannel--gpus_per_node']}}",
                "resourceType": "{{$.inputs.parameters['pipelinechannel--gpu_type']}}",
            }, task
            assert k8s["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi", "volumeName": "dshm"}]
            assert k8s["nodeSelector"] == {"nodeSelectorJson": {"componentInputParameter": "gpu_node_selector"}}
            assert k8s["tolerations"] == [{"tolerationJson": {"componentInputParameter": "gpu_tolerations"}}]
        else:
            assert "accelerator" not in resources, task
            assert not {"emptyDirMounts", "nodeSelector", "tolerations"} & set(k8s), task


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
    assert images == {"lad/lad-python:0.1.0", "lad/lad-trainer:0.1.0"}
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


def test_compile_with_a_registry_names_its_images(tmp_path):
    from lad.pipeline.compile import compile_all

    paths = compile_all(tmp_path, registry="registry.example.com/team")
    assert sorted(p.name for p in paths) == ["retraining.yaml", "training.yaml"]
    spec = next(yaml.safe_load_all(Path(tmp_path / "training.yaml").read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example.com/team/lad-python:0.1.0", "registry.example.com/team/lad-trainer:0.1.0"}


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
    assert [producer("compare-evaluations", a) for a in ("warm_start", "trained", "other")] == ["evaluate-2", "evaluate", "evaluate-3"]
    assert sorted(tasks["compare-evaluations-2"]["inputs"]["artifacts"]) == ["trained", "warm_start"]
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    assert branches["condition-2"]["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--compare_objective'] != ''"
    assert branches["condition-3"]["triggerPolicy"]["condition"] == "!(inputs.parameter_values['pipelinechannel--compare_objective'] != '')"
