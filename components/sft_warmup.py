"""sft_warmup: supervised warm-up before RL (``lad sft``); 0 steps passes the base model on."""

from kfp import dsl
from kfp.dsl import Metrics, Model, Output

from lad.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def sft_warmup(
    base_model: str, model: Output[Model], metrics: Output[Metrics], steps: int, data: str, lr: float,
    micro_batch_size: int, heldout_problems: int, engine: str, seed: int, problems: int = 0,
    experiment: str = "lad-pipeline",
):
    """Fine-tune base_model on demonstrations; writes the model RL starts from.

    Args:
        base_model: tiny:1m, a model folder, s3:// URI or hf://org/name.
        steps: optimizer steps; 0 skips the warm-up (the output is the base model).
        data: synthetic:<task>,... or a parquet/JSONL of records with responses.
        problems: distinct synthetic problems per task (repeated over the steps); 0: as many as the steps consume.
        lr, micro_batch_size, heldout_problems, engine, seed: SFT settings (lad.pipeline.settings.SFT_PARAMETERS).
    """
    from lad.pipeline.identity import current_run
    from lad.pipeline.steps import pipeline_step, sft

    with pipeline_step(experiment, *current_run(), "sft") as parent_run_id:
        results = sft(base_model, model.path, steps=steps, data=data, lr=lr, micro_batch_size=micro_batch_size,
                      heldout_problems=heldout_problems, engine=engine, seed=seed, experiment=experiment,
                      parent_run_id=parent_run_id, problems=problems)
    for key, value in results.items():
        if isinstance(value, (int, float)):
            metrics.log_metric(key, float(value))
    model.metadata.update({"base_model": base_model, "sft_steps": steps})
