"""The project's container images and ``lad images build [--push REGISTRY]`` (docker SDK).

    base     Dockerfile                   the package and the CPU stack (data prep, code execution, registry)
    trainer  images/trainer/Dockerfile    CUDA, torch, DeepSpeed, vLLM (SFT, RL, generation)
    sandbox  images/sandbox/Dockerfile    the code execution service

Images are named ``<registry>/<name>:<tag>``, the tag the lad version and the commit they were
built from (``0.1.0-g1a2b3c4d5e6f``, ``-dirty`` for a modified tree). ``--push`` records the
digests the registry returned in ``build/images.json``; ``lad pipeline compile --registry REGISTRY``
names the images of the current commit by digest when that record matches, else by tag. The
committed YAML (pipelines/compiled/) names :data:`PLACEHOLDER_REGISTRY`, a reserved domain
that never resolves, and ``lad pipeline submit`` refuses a spec that does.

The components read their images when first imported, from ``$LAD_IMAGE_REFS`` (JSON, image key
-> reference; :func:`compile_env` builds it), else the placeholders.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

# RFC 2606's .invalid never resolves: a spec naming it cannot be pulled by accident.
PLACEHOLDER_REGISTRY = "registry.invalid/lad"
PLACEHOLDER_TAG = "unset"
# `lad images build` without --push: images for this machine's engine (lad pipeline run --local --runner docker).
LOCAL_REGISTRY = "lad.local"
REFS_ENV = "LAD_IMAGE_REFS"
LOCK_FILE = Path("build") / "images.json"


@dataclass(frozen=True)
class Image:
    key: str
    name: str
    dockerfile: str  # relative to the build context (the project root)
    purpose: str

    def ref(self, registry: str, tag: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}:{tag}"

    def repository(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}"


IMAGES: dict[str, Image] = {
    i.key: i
    for i in (
        Image("base", "lad-python", "Dockerfile", "the package and the CPU stack"),
        Image("trainer", "lad-trainer", "images/trainer/Dockerfile", "CUDA, torch, DeepSpeed, vLLM"),
        Image("sandbox", "lad-sandbox", "images/sandbox/Dockerfile", "the code execution service"),
    )
}


def image_tag() -> str:
    """The tag of images built from this checkout: lad's version and the commit."""
    from lad.tracking.runs import code_version

    version = code_version()
    if "+g" not in version:
        raise ImagesError("cannot tag the images: lad is not running from a git checkout (the tag names the commit); "
                          "build from a clone of the repository")
    return version.replace("+", "-")


def image_refs(registry: str, tag: str, digests: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Image key -> reference under ``registry``: by digest where ``digests`` has one, else by tag."""
    digests = digests or {}
    return {k: f"{i.repository(registry)}@{digests[k]}" if k in digests else i.ref(registry, tag) for k, i in IMAGES.items()}


def pushed_refs(root: Path, registry: str) -> dict[str, str]:
    """The references ``lad pipeline compile --registry`` writes: by the digests ``--push`` recorded
    for this commit and registry, else by this commit's tag."""
    tag = image_tag()
    lock = root / LOCK_FILE
    record = json.loads(lock.read_text()) if lock.is_file() else {}
    same = record.get("registry") == registry.rstrip("/") and record.get("tag") == tag
    return image_refs(registry, tag, record.get("digests") if same else None)


def compile_env(refs: dict[str, str]) -> dict[str, str]:
    """The environment under which the components name ``refs``."""
    return {REFS_ENV: json.dumps(refs, sort_keys=True)}


def component_image(key: str) -> str:
    """The image a component names (read when its module is first imported)."""
    refs = json.loads(os.environ.get(REFS_ENV) or "{}")
    return refs.get(key) or IMAGES[key].ref(PLACEHOLDER_REGISTRY, PLACEHOLDER_TAG)


# The package and the CPU stack: data prep, code execution, registration.
BASE_IMAGE = component_image("base")
# CUDA, torch, DeepSpeed and vLLM: SFT, RL training and generation for evaluation.
TRAINER_IMAGE = component_image("trainer")


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
    root: Path, keys: Optional[list[str]] = None, *, registry: Optional[str] = None, log: Callable[[str], None] = print,
    client=None,
) -> list[str]:
    """Build the selected images from the project root, tagged with this commit; with ``registry``
    push them there and record their digests in ``build/images.json``. Returns their references
    (by digest when pushed)."""
    images = select(keys)
    client = client or require_engine()
    missing = [i.dockerfile for i in images if not (root / i.dockerfile).is_file()]
    if missing:
        raise ImagesError(f"missing Dockerfile(s) under {root}: {missing}")
    from docker.errors import APIError, BuildError

    tag = image_tag()
    refs, digests = [], {}
    for image in images:
        ref = image.ref(registry or LOCAL_REGISTRY, tag)
        log(f"building {ref} from {image.dockerfile} ({image.purpose})")
        try:
            for chunk in client.api.build(path=str(root), dockerfile=image.dockerfile, tag=ref, rm=True, decode=True):
                if "error" in chunk:
                    raise ImagesError(f"building {ref}: {chunk['error'].strip()}")
                if chunk.get("stream", "").strip():
                    log(chunk["stream"].rstrip())
        except (APIError, BuildError) as err:
            raise ImagesError(f"building {ref}: {err}") from None
        if registry:
            log(f"pushing {ref}")
            for chunk in client.images.push(image.repository(registry), tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    raise ImagesError(f"pushing {ref}: {chunk['error'].strip()}")
                digest = (chunk.get("aux") or {}).get("Digest")
                if digest:
                    digests[image.key] = digest
            if image.key not in digests:
                raise ImagesError(f"pushing {ref}: the registry returned no digest")
            ref = f"{image.repository(registry)}@{digests[image.key]}"
        refs.append(ref)
    if registry:
        record_push(root, registry, tag, digests)
    return refs


def record_push(root: Path, registry: str, tag: str, digests: dict[str, str]) -> None:
    """Add pushed digests to ``build/images.json`` (kept for the same registry and tag, replaced otherwise)."""
    from lad.storage import write_atomic

    lock = root / LOCK_FILE
    record = json.loads(lock.read_text()) if lock.is_file() else {}
    if record.get("registry") != registry.rstrip("/") or record.get("tag") != tag:
        record = {"registry": registry.rstrip("/"), "tag": tag, "digests": {}}
    record["digests"].update(digests)
    lock.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(lock, json.dumps(record, indent=2, sort_keys=True))
