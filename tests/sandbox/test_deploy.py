"""The sandbox image and its Kubernetes manifest say what the service needs to run safely."""

from __future__ import annotations

import tomllib

import yaml
from packaging.requirements import Requirement

from lad.environment import lock_pins
from lad.sandbox.config import SandboxConfig
from sandbox_paths import ROOT

IMAGE = ROOT / "images" / "sandbox"


def test_manifest_deployment_and_service():
    docs = {d["kind"]: d for d in yaml.safe_load_all((IMAGE / "sandbox.yaml").read_text())}
    assert set(docs) == {"Deployment", "Service"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8080}]
    assert {"cpu", "memory"} <= set(c["resources"]["limits"]) and {"cpu", "memory"} <= set(c["resources"]["requests"])
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001 and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["env"][0]["name"] == "LAD_SANDBOX_TOKEN"
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= \
        docs["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    scrape = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert (scrape["prometheus.io/port"], scrape["prometheus.io/path"]) == (str(c["ports"][0]["containerPort"]), "/metrics")
    svc = docs["Service"]["spec"]
    assert svc["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert svc["ports"][0]["targetPort"] == "http"


def test_manifest_runs_the_image_that_lad_images_builds():
    from lad.images import IMAGES, PLACEHOLDER_REGISTRY, PLACEHOLDER_TAG

    docs = {d["kind"]: d for d in yaml.safe_load_all((IMAGE / "sandbox.yaml").read_text())}
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert c["image"] == IMAGES["sandbox"].ref(PLACEHOLDER_REGISTRY, PLACEHOLDER_TAG)


def test_dockerfile_installs_bubblewrap_and_drops_root():
    lines = [line.strip() for line in (IMAGE / "Dockerfile").read_text().splitlines()]
    assert lines[[i for i, line in enumerate(lines) if line.startswith("FROM ")][0]] == "FROM python:3.11-slim-bookworm"
    assert 'ARG BUBBLEWRAP_VERSION=0.8.0-2+deb12u1' in lines, "bookworm's build, pinned"
    assert any("apt-get install" in line and '"bubblewrap=${BUBBLEWRAP_VERSION}"' in line for line in lines)
    assert "USER 10001:10001" in lines
    assert 'ENTRYPOINT ["python", "-m", "lad.sandbox"]' in lines


def test_image_installs_the_packages_programs_may_import():
    """Every default package of the sandbox config is installed in the image (the service reads
    it from its own environment, installed from locks/sandbox.txt); so is it in lad's."""
    assert "-r locks/sandbox.txt" in (IMAGE / "Dockerfile").read_text()
    locked = lock_pins(ROOT / "locks" / "sandbox.txt")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = {Requirement(r).name for r in project["dependencies"]}
    for name in SandboxConfig().packages:
        assert name in locked, name
        assert name in dependencies, name
