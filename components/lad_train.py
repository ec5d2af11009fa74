"""lad_train: LAD RL training (``lad train``), on one pod or as a multi-node TrainJob (or PyTorchJob)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from lad.images import BASE_IMAGE, TRAINER_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def training_pod_gpus(num_nodes: int, gpus_per_node: int) -> int:
    """GPUs of the training step's own pod: gpus_per_node on one node, 0 when it launches a multi-node job."""
    from lad.pipeline.launcher import step_gpus

    return step_gpus(num_nodes, gpus_per_node)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def lad_train(
    init_model: Input[Model], data: Input[Dataset], model: Output[Model], metrics: Output[Metrics],
    objective: str, divergence: str, kappa: float, group_size: int, lr: float, min_lr_ratio: float, mask_truncated: bool,
    steps: int, prompts_per_step: int, mini_batch_size: int, micro_batch_size: int, max_new_tokens: int, rollout_engine: str, engine: str, eval_prompts: int,
    eval_k: int, seed: int, reward_functions: dict, checkpoint_every: int, preset: str = "", overrides: dict = {},
    sandbox_url: str = "", experiment: str = "lad-pipeline",
    num_nodes: int = 1, gpus_per_node: int = 1, gpu_type: str = "nvidia.com/gpu", node_selector: dict = {},
    tolerations: list = [], s3_secret: str = "lad-s3", mlflow_secret: str = "lad-mlflow", hf_secret: str = "lad-hf",
    trainer_image: str = "", multinode_job: str = "TrainJob", stage: str = "train",
):
    """RL from init_model on data's train.parquet.

    Args:
        objective, divergence, kappa, group_size, lr, min_lr_ratio, mask_truncated, steps, prompts_per_step,
            mini_batch_size, micro_batch_size, max_new_tokens, rollout_engine, engine, eval_k, seed: RL settings
            (lad.pipeline.settings.RL_PARAMETERS); one at its RLConfig default (0 where that is None) leaves the preset's value.
        reward_functions: custom rewards, data_source (or "*") -> "module:function" or "[s3://]path/file.py:function"
            (lad.rewards.custom); {}: the built-in ones.
        checkpoint_every: steps between checkpoints, published under s3://<artifact bucket>/lad-checkpoints/<run id>/<stage>
            when the pipeline root is in S3; a retry of this step resumes from the newest one published.
        eval_prompts: held-out prompts (data's eval.parquet) scored before and after; 0: none.
        preset: a name of configs/train/*.yaml, or a path or s3:// URI of an RL config YAML, under the settings above.
        overrides: any RL setting by its dotted RLConfig name, over everything else, e.g. {"algorithm.kl_coef": 0.01}.
        num_nodes: above 1, train as a job across that many nodes (DeepSpeed under torchrun); this step's pod then
            holds no GPU and follows the job.
        gpus_per_node: GPUs of the pod (of each pod of the multi-node job); above 1, one training process per GPU under
            torchrun.
        gpu_type, node_selector, tolerations, s3_secret, mlflow_secret, hf_secret: the job's pods' settings.
        trainer_image: image of the job's pods; empty: this step's own image.
        multinode_job: TrainJob (Kubeflow Trainer v2, torch-distributed runtime) or PyTorchJob (training operator).
        stage: name of the MLflow stage run (one per trained model of a pipeline run).
    """
    from lad.pipeline.identity import current_run
    from lad.pipeline.steps import checkpoint_prefix, pipeline_step, train

    with pipeline_step(experiment, *current_run(), stage) as parent_run_id:
        settings = dict(objective=objective, divergence=divergence, kappa=kappa, group_size=group_size, lr=lr,
                        min_lr_ratio=min_lr_ratio, mask_truncated=mask_truncated, steps=steps,
                        prompts_per_step=prompts_per_step, mini_batch_size=mini_batch_size, micro_batch_size=micro_batch_size,
                        max_new_tokens=max_new_tokens, rollout_engine=rollout_engine, engine=engine, eval_k=eval_k, seed=seed,
                        reward_functions=reward_functions, checkpoint_every=checkpoint_every,
                        preset=preset, overrides=overrides, eval_prompts=eval_prompts, sandbox_url=sandbox_url,
                        experiment=experiment, parent_run_id=parent_run_id, stage=stage)
        if num_nodes > 1:
            from lad.pipeline.launcher import JobSettings, run_multinode

            job = JobSettings(num_nodes=num_nodes, gpus_per_node=gpus_per_node, gpu_type=gpu_type, node_selector=node_selector,
                              tolerations=tolerations, s3_secret=s3_secret, mlflow_secret=mlflow_secret, hf_secret=hf_secret,
                              image=trainer_image, kind=multinode_job)
            results = run_multinode(job, init_model.path, data.path, model.path, model.uri, settings, run_id=current_run()[0])
        else:
            results = train(init_model.path, data.path, model.path, **settings, processes=gpus_per_node,
                            checkpoint_uri=checkpoint_prefix(model.uri, current_run()[0], stage))
    for key, value in results.items():
        if isinstance(value, (int, float)):
            metrics.log_metric(key, float(value))
    # The settings the model was trained with are the stage's config in MLflow (a preset may set the objective).
    model.metadata.update({"steps": results["train/steps"], "num_nodes": num_nodes})
