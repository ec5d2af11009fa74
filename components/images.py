"""The container images the components run in (built by ``lad images build``, see lad/images.py).

The registry is fixed when the pipeline is compiled: ``lad pipeline compile --registry REG``
(which sets $LAD_IMAGE_REGISTRY) names where ``lad images build --push REG`` put them. The
default, ``lad``, is a local name: right for the committed YAML and for a cluster whose nodes
have the images loaded; set your registry for any other cluster.
"""

import os

from lad.images import DEFAULT_REGISTRY, IMAGES

REGISTRY = os.environ.get("LAD_IMAGE_REGISTRY", DEFAULT_REGISTRY)

# The package and the CPU stack: data prep, code execution, registration.
BASE_IMAGE = IMAGES["base"].ref(REGISTRY)
# CUDA, torch, DeepSpeed and vLLM: SFT, RL training and generation for evaluation.
TRAINER_IMAGE = IMAGES["trainer"].ref(REGISTRY)
