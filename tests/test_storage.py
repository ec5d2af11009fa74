"""lad.storage against moto's S3 server on 127.0.0.1, and against local paths."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from servers import S3Server, s3, s3_server  # noqa: F401

from lad import storage
from lad.storage import (
    MANIFEST_NAME,
    ChecksumError,
    NotPublishedError,
    StorageConfig,
    StorageError,
    StorageNotFoundError,
)


def make_tree(root, files):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


TREE = {
    "config.json": b'{"hidden_size": 64}',
    "model.safetensors": os.urandom(300_000),
    "tokenizer/tokenizer.json": b'{"version": "1.0"}',
    "tokenizer/deep/er/vocab.txt": b"a\nb\nc\n",
    "empty.txt": b"",
}


@pytest.fixture
def cfg(tmp_path):
    return StorageConfig(cache_dir=tmp_path / "cache", max_workers=4)


def read_tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


def test_file_round_trip_list_exists_open(s3, tmp_path, cfg):
    src = tmp_path / "a.bin"
    src.write_bytes(b"hello world" * 100)
    uri = f"{s3.root}/x/y/a.bin"
    assert not storage.exists(uri, config=cfg)
    storage.put_file(src, uri, config=cfg)
    assert storage.exists(uri, config=cfg)
    assert storage.exists(f"{s3.root}/x", config=cfg)  # a prefix holding objects
    assert not storage.exists(f"{s3.root}/x/y/a.bi", config=cfg)
    assert storage.list_uri(f"{s3.root}/x", config=cfg) == [uri]
    out = storage.get_file(uri, tmp_path / "out" / "a.bin", config=cfg)
    assert out.read_bytes() == src.read_bytes()
    with storage.open_read(uri, config=cfg) as f:
        assert f.read(5) == b"hello"
        assert f.read() == src.read_bytes()[5:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.bin"]  # no temp leftovers


def test_missing_object_is_a_not_found_error_naming_the_uri(s3, tmp_path, cfg):
    uri = f"{s3.root}/nope.txt"
    with pytest.raises(StorageNotFoundError, match=f"get {uri}: not found"):
        storage.get_file(uri, tmp_path / "nope.txt", config=cfg)
    with pytest.raises(StorageNotFoundError, match=f"open {uri}: not found"):
        storage.open_read(uri, config=cfg)
    assert not (tmp_path / "nope.txt").exists()


def test_folder_round_trip_with_nested_paths_and_cache(s3, tmp_path, cfg):
    src = make_tree(tmp_path / "ckpt", TREE)
    uri = f"{s3.root}/runs/1/ckpt"
    manifest = storage.put_dir(src, uri, config=cfg)
    assert sorted(manifest.files) == sorted(TREE)
    assert manifest.files["model.safetensors"].sha256 == hashlib.sha256(TREE["model.safetensors"]).hexdigest()
    assert manifest.files["empty.txt"].size == 0
    assert storage.is_published(uri, config=cfg)
    assert storage.list_uri(uri, config=cfg) == sorted([f"{uri}/{k}" for k in TREE] + [f"{uri}/{MANIFEST_NAME}"])

    got = storage.get_dir(uri, config=cfg)
    assert got == cfg.cache_dir / manifest.digest()
    assert read_tree(got) == TREE
    assert storage.get_dir(uri, config=cfg) == got

    copy = storage.get_dir(uri, tmp_path / "copy", config=cfg)
    assert read_tree(copy) == TREE
    with pytest.raises(StorageError, match="already exists"):
        storage.get_dir(uri, tmp_path / "copy", config=cfg)


def test_cached_read_makes_no_data_transfers(s3, tmp_path, cfg, monkeypatch):
    src = make_tree(tmp_path / "d", TREE)
    uri = f"{s3.root}/d"
    storage.put_dir(src, uri, config=cfg)
    storage.get_dir(uri, config=cfg)
    # A second read may only fetch the manifest: make data downloads impossible and read again.
    from s3transfer.manager import TransferManager

    def no_download(*a, **k):
        raise AssertionError("a cached read downloaded data")

    monkeypatch.setattr(TransferManager, "download", no_download)
    assert read_tree(storage.get_dir(uri, config=cfg)) == TREE


def test_republish_identical_is_noop_and_new_content_replaces_old(s3, tmp_path, cfg):
    src = make_tree(tmp_path / "d", TREE)
    uri = f"{s3.root}/d"
    m1 = storage.put_dir(src, uri, config=cfg)
    puts = s3.server.faults.puts
    assert storage.put_dir(src, uri, config=cfg).digest() == m1.digest()
    assert s3.server.faults.puts == puts  # nothing uploaded again

    (src / "tokenizer" / "deep" / "er" / "vocab.txt").unlink()
    (src / "config.json").write_bytes(b'{"hidden_size": 128}')
    m2 = storage.put_dir(src, uri, config=cfg)
    assert m2.digest() != m1.digest()
    assert f"{uri}/tokenizer/deep/er/vocab.txt" not in storage.list_uri(uri, config=cfg)
    got = read_tree(storage.get_dir(uri, config=cfg))
    assert got["config.json"] == b'{"hidden_size": 128}' and "tokenizer/deep/er/vocab.txt" not in got


def test_multipart_upload_over_threshold(s3, tmp_path):
    cfg = StorageConfig(cache_dir=tmp_path / "cache", multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    big = tmp_path / "big.bin"
    data = os.urandom((12 << 20) + 123)
    big.write_bytes(data)
    uri = f"{s3.root}/big.bin"
    storage.put_file(big, uri, config=cfg)
    head = s3.server.client().head_object(Bucket=s3.bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # S3 marks multipart objects with -<parts>
    assert storage.get_file(uri, tmp_path / "back.bin", config=cfg).read_bytes() == data

    # A folder holding a big file publishes it in parts too, and verifies it on the way back.
    d = make_tree(tmp_path / "withbig", {"w/big.bin": data, "small.txt": b"x"})
    storage.put_dir(d, f"{s3.root}/withbig", config=cfg)
    assert s3.server.client().head_object(Bucket=s3.bucket, Key="withbig/w/big.bin")["ETag"].strip('"').endswith("-3")
    assert read_tree(storage.get_dir(f"{s3.root}/withbig", config=cfg))["w/big.bin"] == data


# --------------------------------------------------------------------------------------------
# Manifest rules
# --------------------------------------------------------------------------------------------


def test_folder_without_manifest_is_not_readable(s3, tmp_path, cfg):
    src = make_tree(tmp_path / "d", TREE)
    for rel in TREE:  # every data object present, but no manifest
        storage.put_file(src / rel, f"{s3.root}/d/{rel}", config=cfg)
    uri = f"{s3.root}/d"
    assert storage.exists(uri, config=cfg)
    assert not storage.is_published(uri, config=cfg)
    with pytest.raises(NotPublishedError, match=f"{uri}: not a published folder \\(no {MANIFEST_NAME}\\)"):
        storage.get_dir(uri, config=cfg)


def test_tampered_object_is_a_checksum_error_naming_the_key(s3, tmp_path, cfg):
    src = make_tree(tmp_path / "d", TREE)
    uri = f"{s3.root}/d"
    storage.put_dir(src, uri, config=cfg)
    # Same size, different bytes: only the sha256 can tell.
    tampered = bytearray(TREE["tokenizer/tokenizer.json"])
    tampered[0] ^= 1
    s3.server.client().put_object(Bucket=s3.bucket, Key="d/tokenizer/tokenizer.json", Body=bytes(tampered))
    assert storage.is_published(uri, config=cfg)  # sizes still match the listing
    with pytest.raises(ChecksumError, match=f"{uri}/tokenizer/tokenizer.json: sha256 [0-9a-f]{{64}} does not match"):
        storage.get_dir(uri, config=cfg)
    assert [p.name for p in cfg.cache_dir.iterdir()] == []  # nothing half-verified left in the cache

    # A changed size is caught by the listing already.
    s3.server.client().put_object(Bucket=s3.bucket, Key="d/config.json", Body=b"{}")
    assert not storage.is_published(uri, config=cfg)
    with pytest.raises(ChecksumError, match=f"{uri}/config.json: size 2 but the manifest says {len(TREE['config.json'])}"):
        storage.get_dir(uri, config=cfg)


def test_object_missing_from_published_folder(s3, tmp_path, cfg):
    src = make_tree(tmp_path / "d", TREE)
    uri = f"{s3.root}/d"
    storage.put_dir(src, uri, config=cfg)
    s3.server.client().delete_object(Bucket=s3.bucket, Key="d/empty.txt")
    assert not storage.is_published(uri, config=cfg)
    with pytest.raises(NotPublishedError, match=f"{uri}/empty.txt: listed in the manifest but missing"):
        storage.get_dir(uri, config=cfg)


def test_malicious_manifest_paths_are_refused(s3, tmp_path, cfg):
    entry = {"size": 1, "sha256": "0" * 64}
    s3.server.client().put_object(
        Bucket=s3.bucket, Key=f"d/{MANIFEST_NAME}", Body=json.dumps({"format": 1, "files": {"../../etc/x": entry}})
    )
    with pytest.raises(StorageError, match=r"manifest entry '../../etc/x' is not a plain relative path"):
        storage.get_dir(f"{s3.root}/d", config=cfg)
    s3.server.client().put_object(Bucket=s3.bucket, Key=f"d/{MANIFEST_NAME}", Body=b'{"format": 1, "files": {"a": {"size": -1}}}')
    with pytest.raises(NotPublishedError, match=r"manifest is malformed at files.a.size"):
        storage.get_dir(f"{s3.root}/d", config=cfg)


# --------------------------------------------------------------------------------------------
# Faults: throttling, a server that goes away
# --------------------------------------------------------------------------------------------


def test_throttling_is_retried(s3, tmp_path):
    cfg = StorageConfig(cache_dir=tmp_path / "cache", max_attempts=5)
    src = tmp_path / "a.txt"
    src.write_bytes(b"payload")
    s3.server.faults.throttle_next = 3
    storage.put_file(src, f"{s3.root}/a.txt", config=cfg)
    assert s3.server.faults.throttled == 3
    assert storage.read_bytes(f"{s3.root}/a.txt", config=cfg) == b"payload"

    s3.server.faults.throttle_next = 2
    assert storage.read_bytes(f"{s3.root}/a.txt", config=cfg) == b"payload"
    assert s3.server.faults.throttled == 5


def test_throttling_past_the_attempts_is_a_clear_error(s3, tmp_path):
    cfg = StorageConfig(cache_dir=tmp_path / "cache", max_attempts=2)
    src = tmp_path / "a.txt"
    src.write_bytes(b"payload")
    s3.server.faults.throttle_next = 10
    uri = f"{s3.root}/a.txt"
    with pytest.raises(StorageError, match=f"put {uri} failed after up to 2 attempts: .*SlowDown.*reduce your request rate"):
        storage.put_file(src, uri, config=cfg)
    assert s3.server.faults.throttled == 2
    s3.server.faults.throttle_next = 0
    assert not storage.exists(uri, config=cfg)


def test_server_stopped_mid_upload_leaves_no_readable_folder(s3, tmp_path, monkeypatch):
    # A server of our own (the shared one stays up); moto's objects outlive it in this process.
    server = S3Server().start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    cfg = StorageConfig(cache_dir=tmp_path / "cache", max_attempts=2, max_workers=2, connect_timeout=2, read_timeout=5)
    files = {f"shard-{i:02d}/part.bin": os.urandom(20_000) for i in range(30)}
    src = make_tree(tmp_path / "d", files)
    uri = f"{s3.root}/d"
    server.faults.stop_after_puts = 5
    try:
        with pytest.raises(StorageError, match=f"s3://{s3.bucket}/d/shard-\\d\\d/part.bin failed after up to 2 attempts: Could not connect to the endpoint URL"):
            storage.put_dir(src, uri, config=cfg)
        assert not server.running
    finally:
        server.stop()

    # Through the still-running shared server: some data objects landed, the manifest did not.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.server.endpoint)
    landed = storage.list_uri(uri, config=cfg)
    assert 5 <= len(landed) < len(files)
    assert f"{uri}/{MANIFEST_NAME}" not in landed
    assert not storage.is_published(uri, config=cfg)
    with pytest.raises(NotPublishedError):
        storage.get_dir(uri, config=cfg)


def test_writer_killed_mid_upload_leaves_no_readable_folder_and_a_retry_publishes(s3, tmp_path):
    files = {f"shard-{i:02d}/part.bin": os.urandom(10_000) for i in range(20)}
    src = make_tree(tmp_path / "d", files)
    uri = f"{s3.root}/d"
    faults = s3.server.faults
    faults.stall_after_puts = 6
    code = (
        "import sys; from lad import storage; from lad.storage import StorageConfig; "
        "storage.put_dir(sys.argv[1], sys.argv[2], config=StorageConfig(max_workers=2, progress=False))"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(src), uri], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while (faults.puts < 6 or faults.stalled < 1) and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert faults.puts == 6 and faults.stalled >= 1 and writer.poll() is None, "the writer never reached the stall"
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        faults.release.set()
        if writer.poll() is None:
            writer.kill()

    cfg = StorageConfig(cache_dir=tmp_path / "cache")
    landed = storage.list_uri(uri, config=cfg)
    assert len(landed) == 6 and f"{uri}/{MANIFEST_NAME}" not in landed
    assert not storage.is_published(uri, config=cfg)
    with pytest.raises(NotPublishedError, match=f"{uri}: not a published folder"):
        storage.get_dir(uri, config=cfg)

    faults.stall_after_puts = None  # the step's retry publishes the folder whole
    storage.put_dir(src, uri, config=cfg)
    assert read_tree(storage.get_dir(uri, config=cfg)) == files


# --------------------------------------------------------------------------------------------
# Local paths: the same API and rules
# --------------------------------------------------------------------------------------------


def test_local_paths_same_rules(tmp_path, cfg):
    src = make_tree(tmp_path / "src", TREE)
    dst = tmp_path / "published"
    storage.put_dir(src, dst, config=cfg)
    assert storage.is_published(dst, config=cfg)
    assert storage.get_dir(dst, config=cfg) == dst
    assert read_tree(storage.get_dir(dst, tmp_path / "copy", config=cfg)) == TREE
    assert storage.list_uri(dst, config=cfg) == sorted(str(dst / k) for k in [*TREE, MANIFEST_NAME])

    (dst / "model.safetensors").write_bytes(os.urandom(300_000))
    with pytest.raises(ChecksumError, match=f"{dst / 'model.safetensors'}: sha256"):
        storage.get_dir(dst, config=cfg)
    (dst / MANIFEST_NAME).unlink()
    assert not storage.is_published(dst, config=cfg)
    with pytest.raises(NotPublishedError):
        storage.get_dir(dst, config=cfg)

    storage.put_file(src / "config.json", tmp_path / "f" / "c.json", config=cfg)
    assert storage.read_bytes(tmp_path / "f" / "c.json", config=cfg) == TREE["config.json"]
    assert storage.exists(tmp_path / "f" / "c.json") and not storage.exists(tmp_path / "f" / "nope")


def test_bad_inputs_are_named(tmp_path, cfg):
    with pytest.raises(StorageError, match="'s3://': no bucket name"):
        storage.exists("s3://", config=cfg)
    with pytest.raises(StorageNotFoundError, match=f"{tmp_path / 'nope'}: not a folder"):
        storage.put_dir(tmp_path / "nope", tmp_path / "x", config=cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="folder has no files to publish"):
        storage.put_dir(tmp_path / "empty", tmp_path / "x", config=cfg)
    make_tree(tmp_path / "m", {MANIFEST_NAME: b"{}"})
    with pytest.raises(StorageError, match=f"may not hold a file named {MANIFEST_NAME}"):
        storage.put_dir(tmp_path / "m", tmp_path / "x", config=cfg)
    with pytest.raises(StorageNotFoundError, match="put .*: not a file"):
        storage.put_file(tmp_path / "nope", tmp_path / "x", config=cfg)


def test_atomic_write_replaces_whole_files_and_leaves_nothing_on_error(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "summary.json"
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    assert storage.write_atomic(target, '{"a": 1}') == target
    assert target.read_text() == '{"a": 1}' and len(synced) == 2  # the file, then its folder
    # every writer gets its own temporary name, beside the target and with its suffix (matplotlib
    # and the KFP compiler choose the format by it)
    with storage.atomic_path(target) as one, storage.atomic_path(target) as two:
        assert one != two and one.parent == target.parent and one.suffix == ".json" and one.name.startswith(".summary.")
        one.write_text("1")
        two.write_text("2")
    assert target.read_text() == "1"  # the last to finish wins, whole
    with pytest.raises(RuntimeError, match="cut short"):
        with storage.atomic_path(target) as tmp:
            tmp.write_text('{"half')
            raise RuntimeError("cut short")
    assert target.read_text() == "1" and sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]
    storage.put_bytes(b"bytes", target)
    assert target.read_bytes() == b"bytes" and sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]
