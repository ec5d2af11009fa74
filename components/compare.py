"""compare_evaluations: the warm start (or the champion), the trained model (and a baseline objective) side by side."""

from typing import Optional

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Output

from lad.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def compare_evaluations(
    baseline: Input[Dataset], trained: Input[Dataset], comparison: Output[Dataset], report: Output[HTML],
    report_md: Output[Markdown], baseline_label: str = "warm start", trained_label: str = "lad",
    other: Optional[Input[Dataset]] = None, other_label: str = "", experiment: str = "lad-pipeline",
) -> str:
    """One report of evaluations made the same way: Avg@k with CI, Pass@k curves in one plot,
    distinct correct answers and dist-n, per benchmark; also the pipeline run's report in MLflow,
    with its headline numbers. Returns the comparison folder's URI.

    Args:
        baseline: the evaluation the others are measured against: the model RL started from (the
            warm start), or in retraining the champion; labelled baseline_label.
        trained: the evaluation of the trained model, labelled trained_label (its objective, or challenger).
        other: optionally, the evaluation of a model trained from the same warm start with another objective.
    """
    import shutil

    from lad.pipeline.identity import current_run
    from lad.pipeline.steps import compare, pipeline_step

    runs = [(baseline_label, baseline.path), (trained_label, trained.path)]
    if other is not None:
        runs.append((other_label, other.path))
    with pipeline_step(experiment, *current_run(), "compare") as parent_run_id:
        compare(runs, comparison.path, experiment=experiment, parent_run_id=parent_run_id)
    shutil.copyfile(f"{comparison.path}/compare.html", report.path)
    shutil.copyfile(f"{comparison.path}/compare.md", report_md.path)
    return comparison.uri
