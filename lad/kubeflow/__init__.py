"""The Kubeflow layer: ``lad.kubeflow.components`` (the top-level components/ folder: one KFP
component per stage) and ``lad.kubeflow.pipelines`` (pipelines/: the training and retraining
pipelines). They build on the library; nothing else in lad imports them.

An installed wheel carries both folders here. In a checkout (a clone, with or without an editable
install, or a copy of one) they are the folders beside lad/, so that checkout's definitions are
the ones imported.
"""

from pathlib import Path

_checkout = Path(__file__).resolve().parents[2]
if not (Path(__file__).parent / "pipelines").is_dir() and (_checkout / "pipelines" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 (a package's search path)
