"""The multi-node path of the lad_train step up to the cluster: inputs published under the
staging prefix in S3 (local S3 server), the trainer config the pods read, the TrainJob it
creates (named from the run and the stage), and the trained model copied back from where rank 0
publishes it; SIGTERM deletes the job. The Kubernetes API is a stand-in that plays the job: it
publishes a model as the worker would and reports success."""

import json
from pathlib import Path

import pytest

from servers import s3, s3_server  # noqa: F401


class JobPlayingCluster:
    def __init__(self, model_dir: Path):
        self.model_dir = model_dir
        self.created = []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        from lad.storage import put_bytes, put_dir, read_bytes
        from lad.train.rl import RLConfig

        self.created.append((group, version, namespace, plural, body))
        command = body["spec"]["trainer"]["command"]
        config_uri, publish = command[command.index("--config") + 1], command[command.index("--publish") + 1]
        self.config = RLConfig.model_validate_json(read_bytes(config_uri))  # what the worker reads
        put_dir(self.model_dir, f"{publish}/model")
        put_bytes(json.dumps({"train/steps": 3}).encode(), f"{publish}/metrics.json")

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}


@pytest.mark.parametrize("scheme", ["s3://", "minio://"])
def test_run_multinode_stages_inputs_submits_the_job_and_fetches_the_model(tmp_path, s3, monkeypatch, scheme):  # noqa: F811
    import kubernetes

    from lad.pipeline.launcher import JobSettings, job_name, run_multinode

    init, data, trained = tmp_path / "init", tmp_path / "data", tmp_path / "trained"
    for folder, files in ((init, {"config.json": "{}"}), (data, {"train.parquet": "t", "eval.parquet": "e"}),
                          (trained, {"config.json": '{"trained": true}'})):
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
    cluster = JobPlayingCluster(trained)
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda: None)
    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", lambda: cluster)
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", lambda: cluster)

    model_uri = f"{s3.root.replace('s3://', scheme)}/pipeline/run-1/lad-train/model"
    settings = {"objective": "lad", "divergence": "hd", "kappa": 2.0, "group_size": 4, "steps": 3, "prompts_per_step": 2,
                "engine": "deepspeed", "eval_prompts": 8}
    job = JobSettings(num_nodes=3, gpus_per_node=8, image="reg/lad-trainer:0.1.0", namespace="team", poll_s=0.01)
    results = run_multinode(job, str(init), str(data), str(tmp_path / "out" / "model"), model_uri, {**settings, "stage": "train"},
                            run_id="run-1")

    assert results == {"train/steps": 3}
    assert json.loads((tmp_path / "out" / "model" / "config.json").read_text()) == {"trained": True}
    (group, version, namespace, plural, body), = cluster.created
    assert (group, version, namespace, plural) == ("trainer.kubeflow.org", "v1alpha1", "team", "trainjobs")
    assert body["metadata"]["name"] == job_name("run-1", "train")
    assert (body["spec"]["trainer"]["numNodes"], body["spec"]["trainer"]["image"]) == (3, "reg/lad-trainer:0.1.0")
    staging = f"{s3.root}/pipeline/run-1/lad-train/model.job"  # a minio:// root is the same bucket over the S3 API
    cfg = cluster.config
    assert cfg.model == f"{staging}/init"
    assert (cfg.data.train.path, cfg.data.eval.path, cfg.data.eval.limit) == (f"{staging}/data/train.parquet", f"{staging}/data/eval.parquet", 8)
    assert cfg.algorithm.loss_params == {"divergence": "hd", "kappa": 2.0}
    assert (cfg.rollout.n, cfg.train.max_steps, cfg.engine.name) == (4, 3, "deepspeed")
    keys = {o["Key"] for o in s3.server.client().list_objects_v2(Bucket=s3.bucket)["Contents"]}
    assert {"pipeline/run-1/lad-train/model.job/init/config.json", "pipeline/run-1/lad-train/model.job/data/_MANIFEST.json",
            "pipeline/run-1/lad-train/model.job/config.json"} <= keys


def test_run_multinode_needs_an_s3_pipeline_root(tmp_path):
    import pytest

    from lad.pipeline.launcher import JobSettings, LaunchError, run_multinode

    with pytest.raises(LaunchError, match="num_nodes > 1 needs an s3:// or minio:// pipeline root"):
        run_multinode(JobSettings(num_nodes=2), str(tmp_path), str(tmp_path), str(tmp_path / "m"), "/local/model", {})


class RunningJob(JobPlayingCluster):
    """A job that runs until deleted; the step gets SIGTERM while it follows it (a cancelled KFP run)."""

    def __init__(self, model_dir):
        super().__init__(model_dir)
        self.polls, self.deleted = 0, []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        import os
        import signal

        self.polls += 1
        if self.polls == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return {"status": {"conditions": [{"type": "Created", "status": "True"}]}}

    def list_namespaced_pod(self, namespace, label_selector):
        from types import SimpleNamespace

        return SimpleNamespace(items=[])

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.deleted.append((plural, name, body))


def test_sigterm_while_following_the_job_deletes_it(tmp_path, s3, monkeypatch):  # noqa: F811
    import kubernetes

    from lad.pipeline.launcher import JobSettings, job_name, run_multinode
    from lad.tracking import StepTerminated

    for folder in ("init", "data"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.parquet").write_text("t")
    cluster = RunningJob(tmp_path / "init")
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda: None)
    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", lambda: cluster)
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", lambda: cluster)
    job = JobSettings(num_nodes=2, image="reg/lad-trainer:0.1.0", namespace="team", poll_s=0.01)
    with pytest.raises(StepTerminated):
        run_multinode(job, str(tmp_path / "init"), str(tmp_path / "data"), str(tmp_path / "m"), f"{s3.root}/p/model",
                      {"stage": "train", "steps": 1}, run_id="run-9")
    assert cluster.deleted == [("trainjobs", job_name("run-9", "train"), {"propagationPolicy": "Foreground"})]
