"""code_execution: score a table of programs against their tests in the sandbox."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from lad.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def code_execution(
    evaluation: Input[Dataset], benchmarks: str, verdicts: Output[Dataset], metrics: Output[Metrics], k: int,
    limit: int, sandbox_url: str = "", benchmarks_dir: str = "", timeout_s: float = 10.0,
    experiment: str = "lad-pipeline",
):
    """Per-test verdicts of the evaluation's code answers, run by the sandbox service.

    Args:
        evaluation: the evaluate step's results (samples of the code benchmarks).
        benchmarks: the evaluated benchmarks; the code ones are executed.
        sandbox_url: the sandbox Service URL; empty: an in-process sandbox.
    """
    import json

    from lad.pipeline.identity import current_run
    from lad.pipeline.steps import code_execution as run, pipeline_step

    with pipeline_step(experiment, *current_run(), "code_execution") as parent_run_id:
        results, totals = run(evaluation.path, benchmarks, k=k, limit=limit, benchmarks_dir=benchmarks_dir, sandbox_url=sandbox_url,
                              timeout_s=timeout_s, experiment=experiment, parent_run_id=parent_run_id)
    with open(verdicts.path, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in results)
    for key, value in totals.items():
        metrics.log_metric(key, float(value))
    verdicts.metadata.update({k: v for k, v in totals.items() if k != "reference_samples_left_out"})
