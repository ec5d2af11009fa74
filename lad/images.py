"""The project's container images and ``lad images build [--push REGISTRY]`` (docker SDK).

    base     Dockerfile                   the package and the CPU stack (data prep, code execution, registry)
    trainer  images/trainer/Dockerfile    CUDA, torch, DeepSpeed, vLLM (SFT, RL, generation)
    sandbox  images/sandbox/Dockerfile    the code execution service

Images are named ``<registry>/<name>:<lad version>``; the pipeline's components name the same
references (:data:`BASE_IMAGE`, :data:`TRAINER_IMAGE`), so what is built here is what the cluster runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from lad import __version__

DEFAULT_REGISTRY = "lad"


@dataclass(frozen=True)
class Image:
    key: str
    name: str
    dockerfile: str  # relative to the build context (the project root)
    purpose: str

    def ref(self, registry: str = DEFAULT_REGISTRY) -> str:
        return f"{registry.rstrip('/')}/{self.name}:{__version__}"


IMAGES: dict[str, Image] = {
    i.key: i
    for i in (
        Image("base", "lad-python", "Dockerfile", "the package and the CPU stack"),
        Image("trainer", "lad-trainer", "images/trainer/Dockerfile", "CUDA, torch, DeepSpeed, vLLM"),
        Image("sandbox", "lad-sandbox", "images/sandbox/Dockerfile", "the code execution service"),
    )
}


# The registry the components name, fixed when they are first imported: ``lad pipeline compile
# --registry REG`` (which sets $LAD_IMAGE_REGISTRY) names where ``lad images build --push REG`` put
# them. The default, ``lad``, is a local name: right for the committed YAML and for a cluster whose
# nodes have the images loaded; set your registry for any other cluster.
COMPONENT_REGISTRY = os.environ.get("LAD_IMAGE_REGISTRY", DEFAULT_REGISTRY)
# The package and the CPU stack: data prep, code execution, registration.
BASE_IMAGE = IMAGES["base"].ref(COMPONENT_REGISTRY)
# CUDA, torch, DeepSpeed and vLLM: SFT, RL training and generation for evaluation.
TRAINER_IMAGE = IMAGES["trainer"].ref(COMPONENT_REGISTRY)


class ImagesError(RuntimeError):
    """No engine, a missing Dockerfile, or a failed build or push; the message says which."""


def require_engine():
    """A docker client connected to a running engine, or ImagesError saying there is none."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:  # pragma: no cover - docker is a dependency of the package
        raise ImagesError("the docker Python package is not installed (pip install docker)") from None
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as err:
        raise ImagesError(
            "no Docker engine reachable (checked $DOCKER_HOST, else /var/run/docker.sock): "
            f"{err}. Build the images on a machine with Docker, or run the pipeline without images: "
            "lad pipeline run --local"
        ) from None
    return client


def select(keys: Optional[list[str]]) -> list[Image]:
    if not keys:
        return list(IMAGES.values())
    unknown = [k for k in keys if k not in IMAGES]
    if unknown:
        raise ImagesError(f"unknown image(s) {unknown}; expected some of {sorted(IMAGES)}")
    return [IMAGES[k] for k in keys]


def build(
    root: Path, keys: Optional[list[str]] = None, *, registry: str = DEFAULT_REGISTRY, push: bool = False,
    log: Callable[[str], None] = print, client=None,
) -> list[str]:
    """Build (and push) the selected images from the project root; returns their references."""
    images = select(keys)
    client = client or require_engine()
    missing = [i.dockerfile for i in images if not (root / i.dockerfile).is_file()]
    if missing:
        raise ImagesError(f"missing Dockerfile(s) under {root}: {missing}")
    from docker.errors import APIError, BuildError

    refs = []
    for image in images:
        ref = image.ref(registry)
        log(f"building {ref} from {image.dockerfile} ({image.purpose})")
        try:
            for chunk in client.api.build(path=str(root), dockerfile=image.dockerfile, tag=ref, rm=True, decode=True):
                if "error" in chunk:
                    raise ImagesError(f"building {ref}: {chunk['error'].strip()}")
                if chunk.get("stream", "").strip():
                    log(chunk["stream"].rstrip())
        except (APIError, BuildError) as err:
            raise ImagesError(f"building {ref}: {err}") from None
        if push:
            log(f"pushing {ref}")
            for chunk in client.images.push(ref, stream=True, decode=True):
                if "error" in chunk:
                    raise ImagesError(f"pushing {ref}: {chunk['error'].strip()}")
        refs.append(ref)
    return refs
