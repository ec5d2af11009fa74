"""What a run ran on: the installed packages against their lock, the processor, torch's kernels.

A seeded run is the same run only on the same install and the same kind of processor: the
package versions decide the code, and the processor decides which SIMD kernels torch and MKL
pick, and with them the order of every floating-point sum. Each stage records this in its
MLflow run, the pipeline's run summary and the model card, so that two runs that differ can be
told apart by what they ran on.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

# Environment variables that change the numbers or the threads of a run; recorded when set.
NUMERIC_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
               "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES")
LOCK_ENV = "LAD_LOCK"  # the lock file an image was installed from (set in the Dockerfiles)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_packages() -> dict[str, str]:
    """``name -> version`` of every distribution importable here (names normalised, PEP 503)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(_normalise(name), dist.version)
    return dict(sorted(found.items()))


def packages_digest(packages: dict[str, str]) -> str:
    """sha256 of the installed set as ``name==version`` lines: equal digests, equal installs."""
    text = "\n".join(f"{name}=={version}" for name, version in sorted(packages.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def lock_pins(path: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a lock file (pip requirements format)."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if m:
            pins[_normalise(m.group(1))] = m.group(2)
    return pins


def candidate_locks() -> list[Path]:
    """The lock an image names in ``$LAD_LOCK``, else the checkout's ``locks/*.txt`` (an editable install)."""
    named = os.environ.get(LOCK_ENV)
    if named:
        return [Path(named)]
    folder = Path(__file__).resolve().parent.parent / "locks"
    return sorted(folder.glob("*.txt")) if folder.is_dir() else []


def lock_status(packages: dict[str, str], locks: list[Path]) -> dict[str, Any] | None:
    """The lock that pins most of the install: its file, sha256, number of pins, and the packages
    whose installed version differs from its pin (``{}``: the install is that lock's). None when
    no lock is found."""
    best = None
    for path in locks:
        if not path.is_file():
            continue
        pins = lock_pins(path)
        if not pins:
            continue
        differs = {name: {"locked": want, "installed": packages.get(name)} for name, want in pins.items()
                   if packages.get(name) != want}
        entry = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "pins": len(pins),
                 "differs": differs}
        # the lock that most of the install is pinned by (a lock of a subset matches too, with fewer pins)
        if best is None or (len(pins) - len(differs), -len(differs)) > (best["pins"] - len(best["differs"]), -len(best["differs"])):
            best = entry
    return best


# The processor features that decide which kernels torch, MKL and oneDNN run.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_tile")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of Linux's /proc/cpuinfo ({} elsewhere)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


def processor() -> dict[str, Any]:
    """The CPU's vendor, model name and SIMD features (from /proc/cpuinfo, else ``platform``)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "model": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id", ""),
        "simd": [flag for flag in SIMD_FLAGS if flag in flags],
    }


def describe(*, packages: bool = True) -> dict[str, Any]:
    """The record of what this process runs on (JSON-able). ``packages=False`` leaves out the
    installed set itself (its digest and the lock comparison stay)."""
    installed = installed_packages()
    record: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": processor(),
        "cpu_count": os.cpu_count(),
        "env": {key: os.environ[key] for key in NUMERIC_ENV if key in os.environ},
        "packages_sha256": packages_digest(installed),
        "lock": lock_status(installed, candidate_locks()),
    }
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        record["torch"] = {
            "version": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "cuda": torch.version.cuda,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [],
        }
    if packages:
        record["packages"] = installed
    return record


def one_line(record: dict[str, Any]) -> str:
    """:func:`describe` in a sentence, for a console."""
    cpu = record["processor"]
    parts = [f"{cpu['model']} ({' '.join(cpu['simd']) or 'no AVX2'})"]
    t = record.get("torch")
    if t:
        parts.append(f"torch {t['version']} with {t['cpu_capability']} kernels at {t['threads']} threads")
        if t["gpus"]:
            parts.append(f"{len(t['gpus'])} x {t['gpus'][0]}")
    parts.append(f"Python {record['python']}")
    lock = record.get("lock")
    if lock is None:
        parts.append("no lock found")
    elif lock["differs"]:
        parts.append(f"{len(lock['differs'])} packages differ from locks/{lock['file']}")
    else:
        parts.append(f"installed as locks/{lock['file']} pins")
    return ", ".join(parts)


def summary_tags(record: dict[str, Any]) -> dict[str, str]:
    """The few facts of :func:`describe` worth a column in MLflow's run list."""
    tags = {
        "env.processor": f"{record['processor']['model']} ({' '.join(record['processor']['simd'])})",
        "env.python": record["python"],
        "env.packages_sha256": record["packages_sha256"],
    }
    lock = record.get("lock")
    if lock is not None:
        tags["env.lock"] = lock["file"] if not lock["differs"] else f"{lock['file']} ({len(lock['differs'])} packages differ)"
        tags["env.lock_sha256"] = lock["sha256"]
    t = record.get("torch")
    if t:
        tags.update({"env.torch": t["version"], "env.torch_cpu_capability": t["cpu_capability"], "env.torch_threads": str(t["threads"])})
        if t["gpus"]:
            tags["env.gpu"] = ", ".join(sorted(set(t["gpus"]))) + f" x{len(t['gpus'])}"
    return tags
