"""Reading files of records (data prep's parquet, or JSONL; local or s3://) for the stages that use them.

One reader for SFT, RL and evaluation. ``read_rows`` gives the rows as they are (SFT's records
carry a response and need not be canonical); ``read_records`` also validates each row as the
canonical record (``lad.data.schema.Record``). Every error says which stage reads the file and
names the file, the line (JSONL) or row (parquet, counted from 1) and the field.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from pydantic import ValidationError

SUFFIXES = (".parquet", ".jsonl", ".json")


class DataError(ValueError):
    """Input data a stage cannot use; the message names the stage, the file, the line or row and the field."""


def read_rows(path: str, what: str) -> list[tuple[str, dict]]:
    """(place, row) for every row of a parquet or JSONL file: place is "line N" or "row N".
    ``what`` names the reader in errors ("SFT data", "RL data.train", "benchmark math500")."""
    suffix = Path(path.split("?")[0]).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported {what} file type {suffix!r}; expected .parquet or .jsonl")
    raw = _read_bytes(path, what)
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(io.BytesIO(raw)).to_pylist()
        except pa.ArrowException as err:
            raise DataError(f"{what}: {path}: not a readable parquet file ({err})") from None
        out = [(f"row {n}", row) for n, row in enumerate(rows, 1)]
    else:
        out = []
        for n, line in enumerate(raw.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{what}: {path}, line {n}: invalid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{what}: {path}, line {n}: expected a JSON object, got {type(row).__name__}")
            out.append((f"line {n}", row))
    if not out:
        raise DataError(f"{what}: {path} holds no records")
    return out


def read_records(path: str, what: str) -> list[dict]:
    """The canonical records of a file, each validated (``lad.data.schema.Record``) and in its normal form."""
    from lad.data.schema import Record

    records = []
    for place, row in read_rows(path, what):
        try:
            records.append(Record.model_validate(row).model_dump())
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(map(str, first["loc"])) or "(row)"
            raise DataError(f"{what}: {path}, {place}, field {field}: {first['msg']}") from None
    return records


def _read_bytes(path: str, what: str) -> bytes:
    from lad.storage import StorageError, is_s3, read_bytes

    if not is_s3(path) and not Path(path).is_file():
        raise DataError(f"{what}: {path}: no such file")
    try:
        return read_bytes(path)
    except StorageError as err:
        raise DataError(f"{what}: cannot read {path}: {err}") from None
