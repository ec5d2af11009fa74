"""The project stands alone: the public data ships inside the package, byte for byte, named files
resolve from any working directory (``$LAD_DATA_DIR`` and explicit folders override them), hub
datasets have an offline route, nothing in the repository reaches for a sibling folder, and a copy
of the project with nothing beside it evaluates a named benchmark."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import standalone

from lad.data import public
from lad.data.readers import SourceError, parse_hub, read_rows
from lad.evaluation.benchmarks import BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]
# Built from parts so this file does not name the path it forbids.
SIBLING = re.compile(re.escape("..") + "/" + "shared" + r"\b|" + "shared" + "/benchmarks")


def test_every_bundled_file_decompresses_to_its_manifest_sha256_and_rows():
    files = public.manifest()
    assert sorted(files) == sorted({b.file for b in BENCHMARKS.values() if b.file} | {"math_train.jsonl"})
    for name, entry in files.items():
        raw = gzip.decompress((public.PUBLIC_DIR / entry["stored_as"]).read_bytes())
        assert hashlib.sha256(raw).hexdigest() == entry["sha256"], name
        assert len(raw) == entry["bytes"] and sum(1 for line in raw.splitlines() if line.strip()) == entry["rows"], name
        assert entry["license"] in ("MIT", "Apache-2.0") and " @ " in entry["source"], name
    assert files["gsm8k_test.jsonl"]["rows"] == 1319 and files["math_train.jsonl"]["rows"] == 7474


def test_no_file_of_the_repository_names_a_sibling_folder():
    offenders = []
    for rel in standalone.project_files():
        path = ROOT / rel
        if path.suffix in (".gz", ".png", ".parquet"):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if SIBLING.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []


def test_named_files_resolve_bundled_then_in_lad_data_dir_and_strictly_in_an_explicit_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(public.DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert public.locate("gsm8k_test.jsonl") == str(public.PUBLIC_DIR / "gsm8k_test.jsonl.gz")
    assert public.read_jsonl("aime24.jsonl")[0]["answer"] == "204"
    # $LAD_DATA_DIR first (plain or .gz), the bundled files for what it does not hold
    own = tmp_path / "own"
    own.mkdir()
    (own / "aime24.jsonl").write_text('{"problem": "p", "answer": "1"}\n')
    monkeypatch.setenv(public.DATA_DIR_ENV, str(own))
    assert public.locate("aime24.jsonl") == str(own / "aime24.jsonl")
    assert public.locate("amc23.jsonl") == str(public.PUBLIC_DIR / "amc23.jsonl.gz")
    assert public.resolve("lad://aime24.jsonl") == str(own / "aime24.jsonl")
    assert public.resolve("s3://b/k.jsonl") == "s3://b/k.jsonl"
    # an explicit folder holds the user's copies only
    (own / "amc23.jsonl.gz").write_bytes(gzip.compress(b'{"problem": "q", "answer": 2.0}\n'))
    assert public.locate("amc23.jsonl", str(own)) == str(own / "amc23.jsonl.gz")
    with pytest.raises(FileNotFoundError, match=re.escape(f"math500.jsonl: not in {own} (looked for math500.jsonl and math500.jsonl.gz)")):
        public.locate("math500.jsonl", str(own))
    assert public.locate("math500.jsonl", "s3://bucket/bench/") == "s3://bucket/bench/math500.jsonl"
    with pytest.raises(FileNotFoundError, match=r"nope.jsonl: no such data file in \$LAD_DATA_DIR=.* or the bundled files \(aime24.jsonl, "):
        public.locate("nope.jsonl")
    with pytest.raises(FileNotFoundError, match=r"lad://a/b.jsonl: expected lad://<file name>"):
        public.resolve("lad://a/b.jsonl")


def test_compressed_jsonl_reads_like_the_plain_file(tmp_path):
    text = '{"a": 1}\n\nnot json\n[2]\n'
    (tmp_path / "x.jsonl").write_text(text)
    (tmp_path / "x.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "y.json.gz").write_bytes(gzip.compress(b'[{"a": 1}, {"a": 2}]'))
    from lad.data.readers import detect_format

    plain, packed = (list(read_rows(str(tmp_path / f), "jsonl")) for f in ("x.jsonl", "x.jsonl.gz"))
    assert [(r.where, r.data, r.error) for r in packed] == [(r.where, r.data, r.error) for r in plain]
    assert [r.where for r in packed] == ["line 1", "line 3", "line 4"] and packed[2].error == "expected a JSON object, got list"
    assert detect_format(str(tmp_path / "x.jsonl.gz"), "auto") == "jsonl"
    assert detect_format(str(tmp_path / "y.json.gz"), "auto") == "json"
    assert [r.data for r in read_rows(str(tmp_path / "y.json.gz"), "json")] == [{"a": 1}, {"a": 2}]


# --------------------------------------------------------------------------------------------
# hub datasets: hf://datasets/ORG/NAME[/CONFIG][:SPLIT]
# --------------------------------------------------------------------------------------------


def test_hub_references_parse_and_bad_ones_are_named():
    assert parse_hub("hf://datasets/openai/gsm8k/main:test") == ("openai/gsm8k", "main", "test")
    assert parse_hub("hf://datasets/org/name") == ("org/name", None, None)
    assert parse_hub("org/name") == ("org/name", None, None)
    for bad in ("hf://datasets/org", "hf://datasets/org/name:", "hf://datasets/a/b/c/d"):
        with pytest.raises(SourceError, match=re.escape(f"{bad}: expected hf://datasets/ORG/NAME[/CONFIG][:SPLIT]")):
            parse_hub(bad)


def _prep(tmp_path: Path, uri: str, env: dict) -> subprocess.CompletedProcess:
    cfg = tmp_path / "prep.yaml"
    cfg.write_text(json.dumps({"output": str(tmp_path / "out"), "sources": [
        {"name": "gsm", "role": "eval", "adapter": "gsm8k", "uri": uri}]}))
    return subprocess.run([sys.executable, "-m", "lad.cli", "data", "prep", str(cfg)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_hub_datasets_read_from_a_local_copy_under_lad_data_dir(tmp_path):
    """The offline route: a copy saved with save_to_disk, or its parquet files, under
    $LAD_DATA_DIR/ORG/NAME[/CONFIG]; the hub is never asked (HF_HUB_OFFLINE would refuse it)."""
    from datasets import Dataset, DatasetDict

    rows = public.read_jsonl("gsm8k_test.jsonl")[:5]
    table = pa.Table.from_pylist(rows)
    data = tmp_path / "data"
    DatasetDict({"test": Dataset(table)}).save_to_disk(str(data / "openai" / "gsm8k" / "main"))
    (data / "acme" / "math" / "data").mkdir(parents=True)
    pq.write_table(table.slice(0, 3), data / "acme" / "math" / "data" / "test-00000-of-00002.parquet")
    pq.write_table(table.slice(3), data / "acme" / "math" / "data" / "test-00001-of-00002.parquet")
    pq.write_table(table.slice(0, 1), data / "acme" / "math" / "data" / "train-00000-of-00001.parquet")
    env = {**standalone.env_for(ROOT), "LAD_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf-home")}
    for uri in ("hf://datasets/openai/gsm8k/main:test", "hf://datasets/acme/math:test"):
        out = tmp_path / uri.split("/")[-1].replace(":", "-")
        out.mkdir()
        done = _prep(out, uri, env)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads((out / "out" / "report.json").read_text())
        assert report["sources"]["gsm"]["kept"] == 5, uri
        truths = [r["reward_model"]["ground_truth"] for r in pq.read_table(out / "out" / "eval.parquet").to_pylist()]
        assert truths == [re.search(r"#### (.+)$", r["answer"]).group(1).replace(",", "") for r in rows]


def test_an_unreachable_hub_dataset_is_one_line_naming_it_and_the_offline_route(tmp_path):
    env = {**standalone.env_for(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    done = _prep(tmp_path, "hf://datasets/openai/gsm8k/main:test", env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    said = " ".join((done.stdout + done.stderr).split())  # rich wraps the one line at the terminal width
    assert said.startswith("error: source gsm: hf://datasets/openai/gsm8k/main:test: could not load dataset from the "
                           "Hugging Face hub as openai/gsm8k (split test; ")
    assert said.endswith("; offline, save it with save_to_disk (or its parquet files) under $LAD_DATA_DIR/openai/gsm8k")
    assert said.count("error:") == 1
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# wheels, images and a copy of the project with nothing beside it
# --------------------------------------------------------------------------------------------


def test_the_wheel_carries_the_bundled_files(tmp_path):
    copy = standalone.make_copy(tmp_path / "src")  # setuptools writes build/ into the tree it builds
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(copy)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("lad-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"lad/data/public/{e['stored_as']}" for e in public.manifest().values()} | {"lad/data/public/MANIFEST.json"}
    assert expected <= names


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "images/trainer/Dockerfile"])
def test_images_that_evaluate_install_the_package_with_its_data(dockerfile):
    """The CPU and trainer images copy lad/ and install it (not editable), so the package data
    lands in site-packages, and their build fails if any bundled file is missing."""
    text = (ROOT / dockerfile).read_text()
    assert re.search(r"^COPY lad/ lad/$", text, re.M)
    assert re.search(r"pip install [^\n]*(\.|\"\.\[[\w,]+\]\")( |$)", text, re.M) and "-e ." not in text
    assert "from lad.data.public import locate, manifest; [locate(name) for name in manifest()]" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"lad", "lad/data", "*.gz", "lad/data/public"} & set(ignored)


def test_a_copy_with_nothing_beside_it_evaluates_a_named_benchmark(tmp_path):
    from lad.modeling import build_tiny_model, save_model

    copy = standalone.make_copy(tmp_path / "clone")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = standalone.env_for(copy)
    assert standalone.imported_from(copy, env, elsewhere) == copy / "lad" / "__init__.py"
    model, tokenizer = build_tiny_model("1m", seed=0)
    save_model(model, tokenizer, tmp_path / "tiny", {"name": "tiny-random"})
    # a math set, and a code set whose expected values come from running its reference in the sandbox
    done = subprocess.run([sys.executable, "-m", "lad.cli", "eval", "run", "-m", str(tmp_path / "tiny"), "-b",
                           "gsm8k,mbppplus", "--limit", "2", "--k", "1", "--max-new-tokens", "4", "-o", str(elsewhere / "eval")],
                          cwd=elsewhere, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((elsewhere / "eval" / "summary.json").read_text())
    assert [summary["benchmarks"][b]["problems"] for b in ("gsm8k", "mbppplus")] == [2, 2]


def test_an_evaluation_reads_a_hub_dataset_from_its_offline_copy(tmp_path, monkeypatch):
    from datasets import Dataset

    from lad.evaluation.benchmarks import load_records, resolve
    from lad.evaluation.config import EvalConfig

    rows = public.read_jsonl("gsm8k_test.jsonl")[:4]
    Dataset(pa.Table.from_pylist(rows)).save_to_disk(str(tmp_path / "openai" / "gsm8k"))
    monkeypatch.setenv(public.DATA_DIR_ENV, str(tmp_path))
    cfg = EvalConfig(model="unused", benchmarks=[{"name": "gsm8k", "uri": "hf://datasets/openai/gsm8k:test", "limit": 3}])
    records = load_records(resolve(cfg.benchmarks[0], cfg), cfg)
    assert [r["reward_model"]["ground_truth"] for r in records] == [
        re.search(r"#### (.+)$", r["answer"]).group(1).replace(",", "") for r in rows[:3]]
    assert {r["data_source"] for r in records} == {"gsm8k"}
