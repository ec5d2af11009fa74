"""What the distribution installs: lad's packages, and the Kubeflow layer (the top-level
components/ and pipelines/ folders) only under the namespaced lad.kubeflow, never as top-level
names that other distributions could also install."""

import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_packages

import standalone

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_the_package_list_names_every_package_under_lad_and_the_kubeflow_layer():
    tool = _setuptools()
    mapped = {"lad.kubeflow.components": "components", "lad.kubeflow.pipelines": "pipelines", "lad.configs": "configs"}
    assert tool["package-dir"] == mapped
    assert sorted(tool["packages"]) == sorted(find_packages(str(ROOT), include=["lad", "lad.*"]) + list(mapped))
    assert all(p == "lad" or p.startswith("lad.") for p in tool["packages"])


def test_the_install_has_no_top_level_components_or_pipelines(tmp_path):
    code = "import importlib.util; print(importlib.util.find_spec('components'), importlib.util.find_spec('pipelines'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", "None"]


def test_a_copy_imports_its_own_kubeflow_layer(tmp_path):
    copy = standalone.make_copy(tmp_path / "clone")
    code = "import lad.kubeflow.components as c, lad.kubeflow.pipelines.training as t; print(c.__file__); print(t.__file__)"
    done = subprocess.run([sys.executable, "-c", code], env=standalone.env_for(copy), cwd=tmp_path,
                          capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [str(copy / "components" / "__init__.py"), str(copy / "pipelines" / "training.py")]


def test_the_library_does_not_import_the_kubeflow_layer():
    """components and pipelines build on lad; only the command line sits above them."""
    import ast

    upward = []
    for path in sorted((ROOT / "lad").rglob("*.py")):
        if path.relative_to(ROOT / "lad").parts[0] in ("cli", "kubeflow"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            upward += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("components", "pipelines")
                       or n.startswith("lad.kubeflow")]
    assert upward == []
