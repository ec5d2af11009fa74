"""Readers: a source location -> its raw rows, each with the place it came from.

Formats: JSONL (one object a line), JSON (an array of objects, or an object holding one under
"data"), either of them gzip-compressed (``.jsonl.gz``), parquet, a Hugging Face dataset saved with
``save_to_disk`` (``load_from_disk``) and a Hugging Face hub dataset (``hf://datasets/ORG/NAME
[/CONFIG][:SPLIT]``, or a bare ``ORG/NAME``): read from ``$LAD_DATA_DIR/ORG/NAME`` when a copy is
there (saved with ``save_to_disk``, or its parquet files), else through ``datasets.load_dataset``,
which needs a reachable hub. ``lad://<file>`` names a file bundled with the package (see
:mod:`lad.data.public`). An ``s3://`` URI is downloaded through :mod:`lad.storage` first (a file by
its extension, anything else as a published dataset folder). A line that is not a JSON object
becomes a row error, not an exception, so the prep report can list it with the others.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from lad.data.public import DATA_DIR_ENV, resolve

Format = Literal["auto", "jsonl", "json", "parquet", "hf_disk", "hf_hub"]
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
HUB_PREFIX = "hf://datasets/"


class SourceError(RuntimeError):
    """The source as a whole cannot be read (missing file, unknown format, unreachable hub)."""


@dataclass
class RawRow:
    position: int  # 0-based position of the row in its source
    where: str  # "line 12" (JSONL, 1-based) or "row 12" (0-based, like the index of a table)
    data: Optional[dict]
    error: Optional[str] = None  # set when the row could not even be decoded
    text: Optional[str] = None  # the undecodable text, for the quarantine file


def detect_format(location: str, fmt: Format) -> Format:
    if fmt != "auto":
        return fmt
    if location.startswith(HUB_PREFIX):
        return "hf_hub"
    path = Path(location)
    if path.is_dir():
        return "hf_disk"
    suffix = path.suffix.lower()
    if suffix == ".gz" and Path(path.stem).suffix.lower() in (".jsonl", ".ndjson", ".json"):
        suffix = Path(path.stem).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]  # type: ignore[return-value]
    if location.startswith("s3://"):
        return "hf_disk"  # a published folder
    if not path.exists() and location.count("/") <= 1 and not location.startswith((".", "/")):
        return "hf_hub"
    raise SourceError(f"{location}: cannot tell the format from the name; set format to one of jsonl, json, parquet, hf_disk, hf_hub")


def fetch(uri: str, fmt: Format, workdir: Path) -> str:
    """A local path for ``uri``: s3:// objects and folders are downloaded via lad.storage, and
    ``lad://`` names become the bundled (or ``$LAD_DATA_DIR``) file."""
    try:
        uri = resolve(uri)
    except FileNotFoundError as err:
        raise SourceError(str(err)) from None
    if not uri.startswith("s3://"):
        return uri
    from lad import storage

    try:
        if fmt == "hf_disk":
            return str(storage.get_dir(uri))
        local = workdir / Path(storage.split_s3(uri)[1]).name
        storage.get_file(uri, local)
        return str(local)
    except storage.StorageError as err:
        raise SourceError(str(err)) from None


def read_rows(location: str, fmt: Format, *, hf_split: Optional[str] = None) -> Iterator[RawRow]:
    """The raw rows of a local file, folder, or hub dataset."""
    if fmt in ("jsonl", "json", "parquet") and not Path(location).is_file():
        raise SourceError(f"{location}: no such file")
    if fmt == "jsonl":
        yield from _jsonl(Path(location))
    elif fmt == "json":
        yield from _json(Path(location))
    elif fmt == "parquet":
        yield from _table_rows(_parquet(Path(location)))
    elif fmt == "hf_disk":
        yield from _table_rows(_hf_disk(location, hf_split))
    elif fmt == "hf_hub":
        yield from _table_rows(_hf_hub(location, hf_split))
    else:
        raise SourceError(f"{location}: unknown format {fmt!r}")


def _open_text(path: Path):
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace")


def _jsonl(path: Path) -> Iterator[RawRow]:
    with _open_text(path) as fh:
        position = 0
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue  # blank lines (a trailing newline) are not rows
            where = f"line {number}"
            line = line.rstrip("\r\n")  # so a decode error's column is a column of the line
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                yield RawRow(position, where, None, f"invalid JSON: {err.msg} at column {err.colno}", line)
            else:
                if isinstance(data, dict):
                    yield RawRow(position, where, data)
                else:
                    yield RawRow(position, where, None, f"expected a JSON object, got {type(data).__name__}", line)
            position += 1


def _json(path: Path) -> Iterator[RawRow]:
    try:
        with _open_text(path) as fh:
            data: Any = json.loads(fh.read())
    except json.JSONDecodeError as err:
        raise SourceError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON array of objects (or an object with a 'data' array)")
    for i, item in enumerate(data):
        if isinstance(item, dict):
            yield RawRow(i, f"row {i}", item)
        else:
            yield RawRow(i, f"row {i}", None, f"expected a JSON object, got {type(item).__name__}", json.dumps(item))


def _parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise SourceError(f"{path}: not a readable parquet file: {err}") from None


def _hf_disk(location: str, split: Optional[str]):
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(location)
    except Exception as err:  # missing or foreign folders raise FileNotFoundError, corrupt ones others
        raise SourceError(f"{location}: not a dataset saved with save_to_disk ({type(err).__name__}: {err})") from None
    if isinstance(ds, DatasetDict):
        if split is None or split not in ds:
            raise SourceError(f"{location}: a DatasetDict; set hf_split to one of {sorted(ds)}")
        ds = ds[split]
    return ds.data.table if hasattr(ds.data, "table") else ds.data


def parse_hub(location: str) -> tuple[str, Optional[str], Optional[str]]:
    """``hf://datasets/ORG/NAME[/CONFIG][:SPLIT]`` or ``ORG/NAME`` -> (ORG/NAME, CONFIG, SPLIT)."""
    rest, split = location.removeprefix(HUB_PREFIX), None
    if location.startswith(HUB_PREFIX) and ":" in rest:
        rest, split = rest.rsplit(":", 1)
    parts = rest.split("/")
    if len(parts) not in (2, 3) or not all(parts) or (split is not None and not split):
        raise SourceError(f"{location}: expected {HUB_PREFIX}ORG/NAME[/CONFIG][:SPLIT]")
    return "/".join(parts[:2]), (parts[2] if len(parts) == 3 else None), split


def _offline_copy(repo: str, config: Optional[str], split: str):
    """The table of a copy under $LAD_DATA_DIR/ORG/NAME[/CONFIG], or None when there is none."""
    base = os.environ.get(DATA_DIR_ENV)
    if not base:
        return None
    for folder in ([Path(base, repo, config)] if config else []) + [Path(base, repo)]:
        if not folder.is_dir():
            continue
        if (folder / "dataset_dict.json").is_file() or (folder / "dataset_info.json").is_file():
            return _hf_disk(str(folder), split)
        files = sorted(f for f in folder.rglob("*.parquet") if f.name.split("-")[0].split(".")[0] == split)
        if files:
            import pyarrow as pa

            return pa.concat_tables([_parquet(f) for f in files])
        raise SourceError(
            f"{folder}: neither a dataset saved with save_to_disk nor parquet files of split {split!r} "
            f"({split}.parquet or {split}-*.parquet)"
        )
    return None


def _hf_hub(location: str, split: Optional[str]):
    repo, config, uri_split = parse_hub(location)
    split = uri_split or split or "train"
    table = _offline_copy(repo, config, split)
    if table is not None:
        return table
    from datasets import load_dataset

    try:
        ds = load_dataset(repo, config, split=split)
    except Exception as err:  # offline, unknown name, gated: all end the same way for the user
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        # a bare ORG/NAME may also have been meant as a local path
        what = "could not load dataset" if location.startswith(HUB_PREFIX) else "no such local file or folder, and could not load it"
        raise SourceError(
            f"{location}: {what} from the Hugging Face hub as {repo} (split {split}; {type(err).__name__}: {reason}); "
            f"offline, save it with save_to_disk (or its parquet files) under ${DATA_DIR_ENV}/{repo}"
        ) from None
    return ds.data.table if hasattr(ds.data, "table") else ds.data


def _table_rows(table) -> Iterator[RawRow]:
    # batches keep memory flat on big tables; each row is a plain dict of Python values
    position = 0
    for batch in table.to_batches(max_chunksize=1024):
        for row in batch.to_pylist():
            yield RawRow(position, f"row {position}", row)
            position += 1
