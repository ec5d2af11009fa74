"""The public benchmark and training files that ship inside the package, and where named files resolve.

``lad/data/public/`` holds MATH-500, AIME24, AMC, OlympiadBench, Minerva, GSM8K test, MATH train,
HumanEval(+), MBPP+, LiveCodeBench and CodeContests, each gzip-compressed with its upstream rows
byte for byte, and ``MANIFEST.json`` with the source, commit, license and sha256 of every
decompressed file. They install with the package, so a named benchmark works from any working directory, an
installed wheel or a container image, with no download.

A file name resolves, in order, in an explicit folder when the caller gives one (``benchmarks_dir``,
``--benchmarks-dir``: the user's own copies, plain or ``.gz``; an ``s3://`` prefix of plain files),
else in ``$LAD_DATA_DIR`` and then the bundled folder. ``lad://<file>`` is the same lookup as a URI,
for data prep configs.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from pathlib import Path
from typing import Optional

PUBLIC_DIR = Path(__file__).with_name("public")
MANIFEST_FILE = "MANIFEST.json"
DATA_DIR_ENV = "LAD_DATA_DIR"
SCHEME = "lad://"


@functools.cache
def manifest() -> dict[str, dict]:
    """file name -> {what, source, license, sha256, bytes, rows, stored_as, stored_bytes}."""
    return json.loads((PUBLIC_DIR / MANIFEST_FILE).read_text())["files"]


def _in_folder(folder: Path, name: str) -> Optional[Path]:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(name: str, folder: Optional[str] = None) -> str:
    """Path or URI of the file ``name`` (e.g. ``gsm8k_test.jsonl``): see the module docstring."""
    if folder:
        if folder.startswith("s3://"):
            from lad.storage import join_uri

            return join_uri(folder, name)
        found = _in_folder(Path(folder), name)
        if found is None:
            raise FileNotFoundError(f"{name}: not in {folder} (looked for {name} and {name}.gz)")
        return str(found)
    searched = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        searched.append(f"${DATA_DIR_ENV}={env}")
        found = _in_folder(Path(env), name)
        if found is not None:
            return str(found)
    found = _in_folder(PUBLIC_DIR, name)
    if found is not None:
        return str(found)
    searched.append(f"the bundled files ({', '.join(sorted(manifest()))})")
    raise FileNotFoundError(f"{name}: no such data file in {' or '.join(searched)}")


def resolve(uri: str) -> str:
    """``lad://<file>`` -> the file's path; any other URI unchanged."""
    if not uri.startswith(SCHEME):
        return uri
    name = uri[len(SCHEME):]
    if not name or "/" in name:
        raise FileNotFoundError(f"{uri}: expected {SCHEME}<file name>, e.g. {SCHEME}math_train.jsonl")
    return locate(name)


def read_text(name: str, folder: Optional[str] = None) -> str:
    """The decompressed text of a named data file (local copies only)."""
    path = Path(locate(name, folder))
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")


def read_jsonl(name: str, folder: Optional[str] = None) -> list[dict]:
    """The rows of a named JSONL data file, as dicts."""
    return [json.loads(line) for line in read_text(name, folder).splitlines() if line.strip()]
