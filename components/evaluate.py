"""evaluate: Avg@k, Pass@k and diversity on benchmarks, with a report (``lad eval``)."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from lad.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model], benchmarks: str, results: Output[Dataset], metrics: Output[Metrics],
    report: Output[HTML], report_md: Output[Markdown], k: int, limit: int, max_new_tokens: int, temperature: float,
    seed: int, sandbox_url: str = "", benchmarks_dir: str = "", label: str = "model", experiment: str = "lad-pipeline",
    stage: str = "evaluate",
):
    """Sample k responses per problem, score them (code in the sandbox), summarise and report.

    Args:
        benchmarks: comma-separated registered benchmark names (lad eval list).
        k, limit, max_new_tokens, temperature: each benchmark's k samples per problem, first N problems, response
            budget and sampling temperature; 0: its registered value (lad eval list; limit 0: all problems), except
            temperature, where below 0 is the registered one and 0 decodes greedily.
        sandbox_url: the sandbox Service URL for code benchmarks.
        benchmarks_dir: an s3:// prefix or mounted folder of your own copies of the benchmark files; empty: the
            files bundled with lad in the image.
        stage: name of the MLflow stage run (one per evaluated model of a pipeline run).
    """
    import shutil

    from lad.pipeline.identity import current_run
    from lad.pipeline.steps import evaluate as run, pipeline_step, registry_metrics

    with pipeline_step(experiment, *current_run(), stage) as parent_run_id:
        summary = run(model.path, results.path, benchmarks=benchmarks, k=k, limit=limit, max_new_tokens=max_new_tokens,
                      temperature=temperature, sandbox_url=sandbox_url, benchmarks_dir=benchmarks_dir, label=label,
                      seed=seed, experiment=experiment, stage=stage, parent_run_id=parent_run_id)
    for key, value in registry_metrics(summary)[0].items():
        metrics.log_metric(key, value)
    shutil.copyfile(f"{results.path}/report.html", report.path)
    shutil.copyfile(f"{results.path}/report.md", report_md.path)
    results.metadata["benchmarks"] = sorted(summary["benchmarks"])
