"""register_model and champion_model: the MLflow registry's side of the pipeline."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from lad.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_model(
    model: Input[Model], evaluation: Input[Dataset], data: Input[Dataset], name: str, decision: Output[Markdown],
    metrics: Output[Metrics], metric: str = "all/avg@k", margin: float = 0.0, base_model: str = "",
    experiment: str = "lad-pipeline", pipeline_run_id: str = "", pipeline_run_name: str = "",
    champion_evaluation: Input[Dataset] = None, baseline_evaluation: Input[Dataset] = None,
) -> str:
    """Register the model with its evaluation (alias challenger) and run the promotion gate.

    Args:
        name: registered model name.
        metric: promotion metric, e.g. all/avg@k, math/pass@1, humaneval/avg@k.
        margin: required improvement over the champion.
        pipeline_run_id: the KFP run's id: a retried step returns the version it registered before, and the model is
            logged by the stage register of the pipeline run's MLflow run (named pipeline_run_name), which it ends
            (FAILED or KILLED when this step fails or is stopped).
        champion_evaluation: the champion evaluated in this run on the same benchmarks (retraining).
        baseline_evaluation: the model's starting point evaluated the same way: tagged beside it with the gain.
    """
    import json

    from lad.pipeline.reports import decision_markdown
    from lad.pipeline.steps import SUMMARY_FILE, pipeline_step, register

    def summary(artifact):
        with open(f"{artifact.path}/{SUMMARY_FILE}") as fh:
            return json.load(fh)

    with pipeline_step(experiment, pipeline_run_id, pipeline_run_name, "register") as parent_run_id:
        result = register(model.path, summary(evaluation), name=name, metric=metric, margin=margin, base_model=base_model,
                          champion_summary=summary(champion_evaluation) if champion_evaluation is not None else None,
                          baseline_summary=summary(baseline_evaluation) if baseline_evaluation is not None else None,
                          data_dir=data.path, experiment=experiment, registration_key=pipeline_run_id,
                          parent_run_id=parent_run_id)
    metrics.log_metric("version", float(result["version"]))
    metrics.log_metric("promoted", float(result["promoted"]))
    metrics.log_metric(result["metric"], result["value"])
    with open(decision.path, "w") as fh:
        fh.write(decision_markdown(result))
    return json.dumps(result)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def champion_model(name: str, fallback_model: str, model: Output[Model], seed: int = 0,
                   experiment: str = "lad-pipeline", pipeline_run_id: str = "", pipeline_run_name: str = ""):
    """The registered model's current champion (or fallback_model when there is none).

    Args:
        name: registered model name.
        fallback_model: the starting point when nothing is registered yet.
        pipeline_run_id, pipeline_run_name: the KFP run's id and name: its MLflow run is marked FAILED or KILLED when
            this step fails or is stopped.
    """
    from lad.pipeline.steps import champion_model as fetch, pipeline_step

    with pipeline_step(experiment, pipeline_run_id, pipeline_run_name, "champion"):
        found = fetch(name, model.path, fallback=fallback_model, seed=seed)
    model.metadata.update(found)
