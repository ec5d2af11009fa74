"""lad_train: LAD RL training (``lad train``), on one pod or as a multi-node PyTorchJob."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from lad.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def lad_train(
    init_model: Input[Model], data: Input[Dataset], model: Output[Model], metrics: Output[Metrics],
    objective: str = "lad", divergence: str = "js", kappa: float = 4.0, group_size: int = 8, lr: float = 1e-6,
    steps: int = 100, prompts_per_step: int = 32, mini_batch_size: int = 0, micro_batch_size: int = 8, max_new_tokens: int = 1024,
    temperature: float = 1.0, rollout_engine: str = "hf", engine: str = "deepspeed", eval_prompts: int = 64,
    eval_k: int = 4, sandbox_url: str = "", seed: int = 0, experiment: str = "lad-pipeline",
    num_nodes: int = 1, gpus_per_node: int = 1, gpu_type: str = "nvidia.com/gpu", node_selector: dict = {},
    tolerations: list = [], s3_secret: str = "lad-s3", mlflow_secret: str = "lad-mlflow", trainer_image: str = "",
    pipeline_run_id: str = "", pipeline_run_name: str = "", stage: str = "train",
):
    """RL from init_model on data's train.parquet.

    Args:
        objective: lad, grpo, dr_grpo or dapo.
        divergence: LAD's f-divergence (js, hd, tv, kl, rkl, jf, ps).
        kappa: 1/eta, the advantage temperature of LAD's target.
        group_size: G, completions per prompt.
        mini_batch_size: sequences per optimizer step; 0: all prompts_per_step x group_size (one update per step).
        micro_batch_size: sequences per forward/backward.
        num_nodes: above 1, train as a PyTorchJob across that many nodes (DeepSpeed under torchrun).
        gpus_per_node, gpu_type, node_selector, tolerations, s3_secret, mlflow_secret: the PyTorchJob's pods' settings.
        trainer_image: image of the PyTorchJob's pods; empty: this step's own image.
        pipeline_run_id, pipeline_run_name: the KFP run's id and name: the MLflow run the stage nests under (marked
            FAILED or KILLED when this step fails or is stopped); empty: a run of its own.
        stage: name of the MLflow stage run (one per trained model of a pipeline run).
    """
    from lad.pipeline.steps import pipeline_step, train

    with pipeline_step(experiment, pipeline_run_id, pipeline_run_name, stage) as parent_run_id:
        settings = dict(objective=objective, divergence=divergence, kappa=kappa, group_size=group_size, lr=lr, steps=steps,
                        prompts_per_step=prompts_per_step, mini_batch_size=mini_batch_size, micro_batch_size=micro_batch_size, max_new_tokens=max_new_tokens,
                        temperature=temperature, rollout_engine=rollout_engine, engine=engine, eval_prompts=eval_prompts,
                        eval_k=eval_k, sandbox_url=sandbox_url, seed=seed, experiment=experiment, parent_run_id=parent_run_id,
                        stage=stage)
        if num_nodes > 1:
            from lad.pipeline.launcher import JobSettings, run_multinode

            job = JobSettings(num_nodes=num_nodes, gpus_per_node=gpus_per_node, gpu_type=gpu_type, node_selector=node_selector,
                              tolerations=tolerations, s3_secret=s3_secret, mlflow_secret=mlflow_secret, image=trainer_image)
            results = run_multinode(job, init_model.path, data.path, model.path, model.uri, settings)
        else:
            results = train(init_model.path, data.path, model.path, **settings)
    for key, value in results.items():
        if isinstance(value, (int, float)):
            metrics.log_metric(key, float(value))
    model.metadata.update({"objective": objective, "steps": steps, "num_nodes": num_nodes})
