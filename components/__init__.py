"""KFP lightweight Python components, one per pipeline stage.

Each is a thin shell: it takes its inputs' local paths and its parameters, calls one function
of ``lad.pipeline.steps`` (which calls the library) and records the outputs. The function bodies
are shipped inside the compiled pipeline and run in the images from images/, where ``lad``
(and with it kfp) is installed, so the components install nothing at run time.

Which pipeline run a step belongs to is not an input (it would make every run's cache keys
differ): the step reads it from its environment (:func:`lad.pipeline.identity.current_run`) and
nests its MLflow stage under that run's MLflow run, which a failure or SIGTERM marks FAILED or
KILLED; a retried register step returns the version it registered before.
"""

from lad.kubeflow.components.code_execution import code_execution
from lad.kubeflow.components.compare import compare_evaluations
from lad.kubeflow.components.data_prep import data_prep
from lad.kubeflow.components.evaluate import evaluate
from lad.kubeflow.components.lad_train import lad_train, training_pod_gpus
from lad.kubeflow.components.register_model import champion_model, register_model
from lad.kubeflow.components.sft_warmup import sft_warmup

__all__ = ["code_execution", "compare_evaluations", "data_prep", "evaluate", "lad_train", "champion_model", "register_model", "sft_warmup",
           "training_pod_gpus"]
