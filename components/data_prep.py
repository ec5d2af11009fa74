"""data_prep: raw sets -> canonical train/eval parquet (``lad data prep``)."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from lad.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def data_prep(datasets: list, data: Output[Dataset], report: Output[Markdown], extra_train_uri: str = "", seed: int = 0,
              experiment: str = "lad-pipeline"):
    """Read, validate, deduplicate and decontaminate the sources into train.parquet and eval.parquet.

    Args:
        datasets: data prep source entries (see lad/data/config.py SourceConfig): files, s3:// URIs or synthetic tasks.
        extra_train_uri: one more training source (generic adapter), e.g. new data under an S3 prefix; empty: none.
        seed: seed of the training-row shuffle.
    """
    from lad.pipeline.identity import current_run
    from lad.pipeline.steps import pipeline_step, prep
    from lad.pipeline.reports import prep_markdown

    with pipeline_step(experiment, *current_run(), "data_prep") as parent_run_id:
        result = prep(datasets, data.path, extra_train_uri=extra_train_uri, seed=seed, experiment=experiment,
                      parent_run_id=parent_run_id)
    data.metadata.update({name: rows for name, rows in result["outputs"].items()})
    with open(report.path, "w") as fh:
        fh.write(prep_markdown(result))
