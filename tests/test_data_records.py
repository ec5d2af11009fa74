"""The one reader of records files (SFT, RL, evaluation): rows as they are, or validated canonical
records; every error names the stage that reads the file, the file, the line or row and the field."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lad.data.records import DataError, read_records, read_rows
from lad.data.synthetic import generate


def test_jsonl_and_parquet_give_the_same_validated_records(tmp_path):
    records = generate("arithmetic", 3, seed=0)
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")  # a blank line is skipped
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "r.parquet")
    assert read_records(str(tmp_path / "r.jsonl"), "RL data.train") == records
    assert read_records(str(tmp_path / "r.parquet"), "RL data.train") == records
    assert [place for place, _ in read_rows(str(tmp_path / "r.parquet"), "SFT data")] == ["row 1", "row 2", "row 3"]
    # rows as they are: SFT's records carry a response and are no canonical records
    (tmp_path / "sft.jsonl").write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}], "response": "yo"}) + "\n")
    assert read_rows(str(tmp_path / "sft.jsonl"), "SFT data") == [("line 1", {"prompt": [{"role": "user", "content": "hi"}],
                                                                                  "response": "yo"})]
    with pytest.raises(DataError, match=r"^RL data.train: .*sft.jsonl, line 1, field data_source: Field required$"):
        read_records(str(tmp_path / "sft.jsonl"), "RL data.train")


def test_errors_name_the_stage_file_place_and_field(tmp_path):
    good = generate("countdown", 1, seed=0)[0]
    bad = dict(good, prompt=[{"role": "user", "content": "  "}])
    (tmp_path / "bad.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"^benchmark countdown: .*bad.jsonl, line 2, field prompt.0.content: Value error, message content is blank$"):
        read_records(str(tmp_path / "bad.jsonl"), "benchmark countdown")
    pq.write_table(pa.Table.from_pylist([good, dict(good, prompt=[{"role": "assistant", "content": "x"}])]), tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"^RL data.eval: .*b.parquet, row 2, field \(row\): Value error, the last prompt message must be the user's$"):
        read_records(str(tmp_path / "b.parquet"), "RL data.eval")
    (tmp_path / "torn.jsonl").write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(DataError, match=r"^SFT data: .*torn.jsonl, line 2: invalid JSON \(Expecting property name"):
        read_rows(str(tmp_path / "torn.jsonl"), "SFT data")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"^SFT data: .*list.jsonl, line 1: expected a JSON object, got list$"):
        read_rows(str(tmp_path / "list.jsonl"), "SFT data")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"^RL data.train: .*empty.jsonl holds no records$"):
        read_rows(str(tmp_path / "empty.jsonl"), "RL data.train")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"^RL data.train: .*junk.parquet: not a readable parquet file"):
        read_rows(str(tmp_path / "junk.parquet"), "RL data.train")
    with pytest.raises(DataError, match=r"^RL data.train: .*none.jsonl: no such file$"):
        read_rows(str(tmp_path / "none.jsonl"), "RL data.train")
    with pytest.raises(DataError, match=r"d.csv: unsupported RL data.train file type '.csv'; expected .parquet or .jsonl$"):
        read_rows(str(tmp_path / "d.csv"), "RL data.train")
