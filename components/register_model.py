"""register_model and champion_model: the MLflow registry's side of the pipeline."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from lad.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_model(
    model: Input[Model], evaluation: Input[Dataset], data: Input[Dataset], name: str, decision: Output[Markdown],
    metrics: Output[Metrics], metric: str, margin: float, min_score: float, base_model: str = "",
    experiment: str = "lad-pipeline",
    champion_evaluation: Input[Dataset] = None, baseline_evaluation: Input[Dataset] = None,
) -> str:
    """Register the model with its evaluation (alias challenger) and run the promotion gate.

    Args:
        name: registered model name.
        metric: promotion metric, e.g. all/avg@k, math/pass@1, humaneval/avg@k.
        margin: required improvement over the champion (a tie is never promoted).
        min_score: the floor: a version scoring below it on metric is registered but not promoted.
        champion_evaluation: the champion evaluated in this run on the same benchmarks (retraining).
        baseline_evaluation: the model's starting point evaluated the same way: tagged beside it with the gain.
    """
    import json

    from lad.pipeline.identity import current_run
    from lad.pipeline.reports import decision_markdown
    from lad.pipeline.steps import SUMMARY_FILE, pipeline_step, register

    def summary(artifact):
        with open(f"{artifact.path}/{SUMMARY_FILE}") as fh:
            return json.load(fh)

    with pipeline_step(experiment, *current_run(), "register") as parent_run_id:
        result = register(model.path, summary(evaluation), name=name, metric=metric, margin=margin, min_score=min_score,
                          base_model=base_model,
                          champion_summary=summary(champion_evaluation) if champion_evaluation is not None else None,
                          baseline_summary=summary(baseline_evaluation) if baseline_evaluation is not None else None,
                          data_dir=data.path, experiment=experiment, registration_key=current_run()[0],
                          parent_run_id=parent_run_id)
    metrics.log_metric("version", float(result["version"]))
    metrics.log_metric("promoted", float(result["promoted"]))
    metrics.log_metric(result["metric"], result["value"])
    with open(decision.path, "w") as fh:
        fh.write(decision_markdown(result))
    return json.dumps(result)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def champion_model(name: str, fallback_model: str, model: Output[Model], seed: int = 0,
                   experiment: str = "lad-pipeline"):
    """The registered model's current champion (or fallback_model when there is none).

    Args:
        name: registered model name.
        fallback_model: the starting point when nothing is registered yet.
    """
    from lad.pipeline.identity import current_run
    from lad.pipeline.steps import champion_model as fetch, pipeline_step

    with pipeline_step(experiment, *current_run(), "champion"):
        found = fetch(name, model.path, fallback=fallback_model, seed=seed)
    model.metadata.update(found)
