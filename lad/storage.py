"""One storage API over ``s3://bucket/key`` URIs and local paths, with atomic folder publish.

Stages hand artifacts to each other through this module. Files are plain objects. Folders
(checkpoints, datasets) are *published*: every data file is uploaded first, then a manifest
object listing each file's size and sha256 is written last. A reader accepts a folder only when
its manifest exists and the files match it, so a step that crashes or loses the network mid-upload
leaves nothing a later step would take for whole. Downloads of folders are verified against the
manifest and cached locally under the manifest's digest, so a second read costs no transfer.

S3 goes through boto3: endpoint and credentials come from the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), so AWS S3, MinIO and a local test server all work
unchanged. Large files use boto3's transfer manager (multipart above a threshold); the files of a
folder share one transfer manager whose thread pool bounds the concurrency. Throttling, 5xx and
connection errors are retried by botocore's ``standard`` retry mode (exponential backoff with
jitter); when the attempts run out the error names the URI, the operation and the cause.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, Literal

from pydantic import BaseModel, Field, ValidationError
from tqdm import tqdm

MANIFEST_NAME = "_MANIFEST.json"
_HASH_BLOCK = 1 << 20
_MIB = 1 << 20


class StorageError(RuntimeError):
    """An operation on a URI failed; the message names the URI, the operation and the cause."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The object, file or folder does not exist."""


class NotPublishedError(StorageError):
    """A folder has no manifest, or its files do not match the manifest."""


class ChecksumError(StorageError):
    """A downloaded file's sha256 differs from the manifest's."""


class StorageConfig(BaseModel):
    """How to reach S3. Every default can be left alone on AWS, MinIO and the local test server."""

    endpoint_url: str | None = Field(
        None, description="S3 endpoint; None: boto3's own resolution (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS)"
    )
    addressing_style: Literal["auto", "path", "virtual"] | None = Field(
        None,
        description="None: path style when an endpoint is set (MinIO and test servers have no per-bucket DNS), else auto",
    )
    max_attempts: int = Field(8, ge=1, description="attempts per request, counting the first (botocore standard mode)")
    max_workers: int = Field(8, ge=1, description="threads shared by all transfers of one call")
    multipart_threshold: int = Field(64 * _MIB, ge=5 * _MIB, description="files at least this big upload in parts")
    multipart_chunksize: int = Field(16 * _MIB, ge=5 * _MIB, description="part size of multipart transfers")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to open a connection")
    read_timeout: float = Field(60.0, gt=0, description="seconds to wait for a response")
    cache_dir: Path | None = Field(None, description="folder download cache; None: $LAD_CACHE_DIR or ~/.cache/lad/storage")
    progress: bool | None = Field(None, description="show a progress bar for folders; None: only on a terminal")

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        env = os.environ.get("LAD_CACHE_DIR")
        return Path(env) if env else Path.home() / ".cache" / "lad" / "storage"


class FileEntry(BaseModel):
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    """What a published folder holds: relative POSIX path -> size and sha256."""

    format: Literal[1] = 1
    files: dict[str, FileEntry]

    def to_bytes(self) -> bytes:
        # Canonical bytes: the digest of equal manifests is equal, whoever wrote them.
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files.values())


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def is_s3(uri: str | os.PathLike) -> bool:
    return isinstance(uri, str) and uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not is_s3(uri):
        raise StorageError(f"{uri!r}: not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"{uri!r}: no bucket name after s3://")
    return bucket, key


def join_uri(base: str | os.PathLike, rel: str) -> str:
    if is_s3(base):
        return f"{str(base).rstrip('/')}/{rel}"
    return str(Path(base) / rel)


def _prefix(key: str) -> str:
    return key.rstrip("/") + "/" if key.strip("/") else ""


def _check_relpath(rel: str, where: str) -> None:
    # A manifest from the store decides where files land locally: refuse anything that escapes.
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or rel != p.as_posix() or rel.startswith("./"):
        raise StorageError(f"{where}: manifest entry {rel!r} is not a plain relative path")


def parse_manifest(data: bytes, where: str) -> Manifest:
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise NotPublishedError(
            f"{where}: manifest is malformed at {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None
    for rel in manifest.files:
        _check_relpath(rel, where)
    return manifest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _local_files(local_dir: Path) -> list[tuple[str, Path]]:
    if not local_dir.is_dir():
        raise StorageNotFoundError(f"{local_dir}: not a folder")
    files = sorted((p.relative_to(local_dir).as_posix(), p) for p in local_dir.rglob("*") if p.is_file())
    if not files:
        raise StorageError(f"{local_dir}: folder has no files to publish")
    if any(rel == MANIFEST_NAME for rel, _ in files):
        raise StorageError(f"{local_dir / MANIFEST_NAME}: a folder to publish may not hold a file named {MANIFEST_NAME}")
    return files


def build_manifest(local_dir: Path, max_workers: int = 8) -> Manifest:
    """Sizes and sha256 of every file under ``local_dir`` (hashing in parallel: hashlib frees the GIL)."""
    files = _local_files(local_dir)
    with ThreadPoolExecutor(max_workers) as pool:
        digests = list(pool.map(lambda item: sha256_file(item[1]), files))
    return Manifest(
        files={rel: FileEntry(size=p.stat().st_size, sha256=d) for (rel, p), d in zip(files, digests)}
    )


# --------------------------------------------------------------------------------------------
# S3 client and error translation
# --------------------------------------------------------------------------------------------

_session_lock = threading.Lock()
_clients: dict[tuple, object] = {}
_ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
)


def _client(cfg: StorageConfig):
    """A boto3 S3 client for this config and the current AWS environment (cached: clients are thread-safe)."""
    key = (cfg.model_dump_json(), tuple(os.environ.get(k) for k in _ENV_KEYS))
    with _session_lock:
        if key in _clients:
            return _clients[key]
        import boto3
        from botocore.config import Config

        endpoint = cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        style = cfg.addressing_style or ("path" if endpoint else "auto")
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=cfg.endpoint_url,
            config=Config(
                retries={"total_max_attempts": cfg.max_attempts, "mode": "standard"},
                s3={"addressing_style": style},
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.read_timeout,
                max_pool_connections=max(10, cfg.max_workers),
            ),
        )
        _clients[key] = client
        return client


def _transfer_config(cfg: StorageConfig):
    from boto3.s3.transfer import TransferConfig

    # The classic (non-CRT) manager: its thread pool is the bound on concurrency.
    return TransferConfig(
        multipart_threshold=cfg.multipart_threshold,
        multipart_chunksize=cfg.multipart_chunksize,
        max_concurrency=cfg.max_workers,
        preferred_transfer_client="classic",
    )


def _is_not_found(err: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(err, ClientError):
        return False
    code = str(err.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


@contextmanager
def _s3_errors(op: str, uri: str, cfg: StorageConfig) -> Iterator[None]:
    """Turn boto errors into a StorageError naming the operation, the URI and the cause."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError
    from s3transfer.exceptions import RetriesExceededError

    try:
        yield
    except StorageError:
        raise
    except ClientError as err:
        if _is_not_found(err):
            raise StorageNotFoundError(f"{op} {uri}: not found ({err})") from err
        raise StorageError(f"{op} {uri} failed after up to {cfg.max_attempts} attempts: {err}") from err
    except (BotoCoreError, S3UploadFailedError, RetriesExceededError) as err:
        raise StorageError(f"{op} {uri} failed after up to {cfg.max_attempts} attempts: {err}") from err


class _Progress:
    """An s3transfer subscriber that feeds a tqdm bar with bytes moved."""

    def __init__(self, bar: tqdm):
        self.bar = bar

    def on_queued(self, future, **kwargs):
        pass

    def on_progress(self, future, bytes_transferred, **kwargs):
        self.bar.update(bytes_transferred)

    def on_done(self, future, **kwargs):
        pass


def _bar(cfg: StorageConfig, total: int, desc: str) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None if cfg.progress is None else not cfg.progress)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _cfg(config: StorageConfig | None) -> StorageConfig:
    return config if config is not None else StorageConfig()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write a file at; when the block ends
    without an error the file is fsync'ed and renamed over ``path`` (and the folder fsync'ed), so
    a reader, or a run killed at any moment, sees the old content or the new, never part of it.

    The temporary name is unique (concurrent writers never share one) and keeps the suffix, so
    writers that pick a format by it (matplotlib, the KFP compiler) work unchanged; on an error
    it is removed.
    """
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:12]}.tmp{dst.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        folder = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to the local file ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def put_file(local: str | os.PathLike, uri: str | os.PathLike, *, config: StorageConfig | None = None) -> None:
    """Upload (or copy) one file; multipart above the threshold. The target never shows a partial file."""
    cfg = _cfg(config)
    src = Path(local)
    if not src.is_file():
        raise StorageNotFoundError(f"put {src}: not a file")
    if not is_s3(uri):
        _copy_atomic(src, Path(uri))
        return
    bucket, key = split_s3(str(uri))
    from boto3.s3.transfer import create_transfer_manager

    with _s3_errors("put", str(uri), cfg):
        with create_transfer_manager(_client(cfg), _transfer_config(cfg)) as tm:
            tm.upload(str(src), bucket, key).result()


def get_file(uri: str | os.PathLike, local: str | os.PathLike, *, config: StorageConfig | None = None) -> Path:
    """Download (or copy) one file to ``local``; written under a temporary name, then renamed."""
    cfg = _cfg(config)
    dst = Path(local)
    if not is_s3(uri):
        src = Path(uri)
        if not src.is_file():
            raise StorageNotFoundError(f"get {src}: not a file")
        _copy_atomic(src, dst)
        return dst
    bucket, key = split_s3(str(uri))
    dst.parent.mkdir(parents=True, exist_ok=True)
    from boto3.s3.transfer import create_transfer_manager

    # s3transfer downloads to a temporary name and renames on success.
    with _s3_errors("get", str(uri), cfg):
        with create_transfer_manager(_client(cfg), _transfer_config(cfg)) as tm:
            tm.download(bucket, key, str(dst)).result()
    return dst


def put_bytes(data: bytes, uri: str | os.PathLike, *, config: StorageConfig | None = None) -> None:
    """Write a small object in one request (or one local file, atomically)."""
    cfg = _cfg(config)
    if not is_s3(uri):
        write_atomic(uri, data)
        return
    bucket, key = split_s3(str(uri))
    with _s3_errors("put", str(uri), cfg):
        _client(cfg).put_object(Bucket=bucket, Key=key, Body=data)


def read_bytes(uri: str | os.PathLike, *, config: StorageConfig | None = None) -> bytes:
    with open_read(uri, config=config) as f:
        return f.read()


def open_read(uri: str | os.PathLike, *, config: StorageConfig | None = None) -> BinaryIO:
    """A binary stream over the object or file (use it in a ``with`` block)."""
    cfg = _cfg(config)
    if not is_s3(uri):
        try:
            return open(uri, "rb")
        except FileNotFoundError:
            raise StorageNotFoundError(f"open {uri}: no such file") from None
    bucket, key = split_s3(str(uri))
    with _s3_errors("open", str(uri), cfg):
        return _client(cfg).get_object(Bucket=bucket, Key=key)["Body"]


def _list_objects(bucket: str, prefix: str, cfg: StorageConfig, uri: str) -> dict[str, int]:
    """key -> size of every object under ``prefix``."""
    out: dict[str, int] = {}
    with _s3_errors("list", uri, cfg):
        for page in _client(cfg).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
    return out


def list_uri(uri: str | os.PathLike, *, config: StorageConfig | None = None) -> list[str]:
    """Every file under a folder URI (recursively), as full URIs, sorted."""
    cfg = _cfg(config)
    if not is_s3(uri):
        root = Path(uri)
        if root.is_file():
            return [str(root)]
        return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    bucket, key = split_s3(str(uri))
    return sorted(f"s3://{bucket}/{k}" for k in _list_objects(bucket, _prefix(key), cfg, str(uri)))


def exists(uri: str | os.PathLike, *, config: StorageConfig | None = None) -> bool:
    """True when the URI is a file/object, or a folder/prefix holding at least one object."""
    cfg = _cfg(config)
    if not is_s3(uri):
        return Path(uri).exists()
    bucket, key = split_s3(str(uri))
    client = _client(cfg)
    if key and not key.endswith("/"):
        try:
            with _s3_errors("head", str(uri), cfg):
                client.head_object(Bucket=bucket, Key=key)
            return True
        except StorageNotFoundError:
            pass
    try:
        with _s3_errors("list", str(uri), cfg):
            page = client.list_objects_v2(Bucket=bucket, Prefix=_prefix(key), MaxKeys=1)
    except StorageNotFoundError:  # no such bucket
        return False
    return page.get("KeyCount", 0) > 0


def delete(uri: str | os.PathLike, *, config: StorageConfig | None = None) -> None:
    """Remove a file/object, or everything under a folder/prefix. Missing targets are not an error."""
    cfg = _cfg(config)
    if not is_s3(uri):
        p = Path(uri)
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
        return
    bucket, key = split_s3(str(uri))
    keys = [key] if key and not key.endswith("/") else []
    keys += list(_list_objects(bucket, _prefix(key), cfg, str(uri)))
    _delete_keys(bucket, keys, cfg, str(uri))


def _delete_keys(bucket: str, keys: list[str], cfg: StorageConfig, uri: str) -> None:
    client = _client(cfg)
    with _s3_errors("delete", uri, cfg):
        for i in range(0, len(keys), 1000):  # the S3 batch limit
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            if batch:
                resp = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
                if resp.get("Errors"):
                    e = resp["Errors"][0]
                    raise StorageError(f"delete s3://{bucket}/{e['Key']} failed: {e.get('Code')}: {e.get('Message')}")


# --------------------------------------------------------------------------------------------
# Folders: atomic publish, verified and cached reads
# --------------------------------------------------------------------------------------------


def read_manifest(uri: str | os.PathLike, *, config: StorageConfig | None = None) -> Manifest:
    """The manifest of a published folder; NotPublishedError when there is none."""
    murl = join_uri(uri, MANIFEST_NAME)
    try:
        data = read_bytes(murl, config=config)
    except StorageNotFoundError:
        raise NotPublishedError(f"{uri}: not a published folder (no {MANIFEST_NAME})") from None
    return parse_manifest(data, str(uri))


def _listing_mismatch(uri: str | os.PathLike, manifest: Manifest, cfg: StorageConfig) -> str | None:
    """Compare the store's listing (names and sizes) with the manifest; describe the first mismatch."""
    if is_s3(uri):
        bucket, key = split_s3(str(uri))
        pre = _prefix(key)
        sizes = {k[len(pre) :]: s for k, s in _list_objects(bucket, pre, cfg, str(uri)).items()}
    else:
        root = Path(uri)
        sizes = {rel: p.stat().st_size for rel, p in ((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())}
    for rel, entry in manifest.files.items():
        if rel not in sizes:
            return f"{join_uri(uri, rel)}: listed in the manifest but missing"
        if sizes[rel] != entry.size:
            return f"{join_uri(uri, rel)}: size {sizes[rel]} but the manifest says {entry.size}"
    return None


def is_published(uri: str | os.PathLike, *, config: StorageConfig | None = None) -> bool:
    """A folder is readable when its manifest exists and every listed file is there with its size.

    Contents (sha256) are checked on download by :func:`get_dir`.
    """
    cfg = _cfg(config)
    try:
        manifest = read_manifest(uri, config=cfg)
    except (NotPublishedError, StorageNotFoundError):
        return False
    return _listing_mismatch(uri, manifest, cfg) is None


def content_hash(uri: str | os.PathLike, *, config: StorageConfig | None = None) -> str:
    """A sha256 naming the content: a file's own sha256, or a folder's manifest digest.

    A local folder need not be published: its digest is computed the way :func:`put_dir` would,
    so it equals the digest of the folder once published. A remote folder must be published.
    """
    cfg = _cfg(config)
    if not is_s3(uri):
        p = Path(uri)
        if p.is_file():
            return sha256_file(p)
        if not p.is_dir():
            raise StorageNotFoundError(f"hash {p}: no such file or folder")
        try:
            return read_manifest(p, config=cfg).digest()
        except NotPublishedError:
            return build_manifest(p, cfg.max_workers).digest()
    bucket, key = split_s3(str(uri))
    if key and not key.endswith("/"):
        h = hashlib.sha256()
        try:
            with open_read(uri, config=cfg) as f:
                while block := f.read(_HASH_BLOCK):
                    h.update(block)
            return h.hexdigest()
        except StorageNotFoundError:
            pass  # not an object: a folder
    return read_manifest(uri, config=cfg).digest()


def put_dir(local_dir: str | os.PathLike, uri: str | os.PathLike, *, config: StorageConfig | None = None) -> Manifest:
    """Publish a folder: data files first, the manifest last; returns the manifest.

    Re-publishing identical content is a no-op (a retried step costs nothing). Publishing new
    content over an existing folder first removes the old manifest, so no reader sees a mix,
    and afterwards removes files the new manifest does not list.
    """
    cfg = _cfg(config)
    src = Path(local_dir)
    manifest = build_manifest(src, cfg.max_workers)
    try:
        old = read_manifest(uri, config=cfg)
    except NotPublishedError:
        old = None
    if old is not None and old.digest() == manifest.digest() and _listing_mismatch(uri, manifest, cfg) is None:
        return manifest
    murl = join_uri(uri, MANIFEST_NAME)
    if old is not None:
        delete(murl, config=cfg)

    if is_s3(uri):
        bucket, key = split_s3(str(uri))
        pre = _prefix(key)
        from boto3.s3.transfer import create_transfer_manager

        with _bar(cfg, manifest.total_bytes, f"upload {uri}") as bar, _s3_errors("publish", str(uri), cfg):
            with create_transfer_manager(_client(cfg), _transfer_config(cfg)) as tm:
                futures = [
                    (rel, tm.upload(str(src / rel), bucket, pre + rel, subscribers=[_Progress(bar)]))
                    for rel in manifest.files
                ]
                for rel, fut in futures:
                    with _s3_errors("upload", f"s3://{bucket}/{pre}{rel}", cfg):
                        fut.result()
        put_bytes(manifest.to_bytes(), murl, config=cfg)
        stale = [k for k in _list_objects(bucket, pre, cfg, str(uri)) if k[len(pre) :] not in manifest.files and k != pre + MANIFEST_NAME]
        _delete_keys(bucket, stale, cfg, str(uri))
    else:
        dst = Path(uri)
        same = dst.exists() and src.resolve() == dst.resolve()
        if not same:
            for rel in tqdm(manifest.files, desc=f"copy {uri}", disable=None if cfg.progress is None else not cfg.progress):
                _copy_atomic(src / rel, dst / rel)
        put_bytes(manifest.to_bytes(), murl, config=cfg)
        for p in dst.rglob("*"):
            rel = p.relative_to(dst).as_posix()
            if p.is_file() and rel not in manifest.files and rel != MANIFEST_NAME:
                p.unlink()
    return manifest


def _verify_file(path: Path, entry: FileEntry, where: str) -> None:
    size = path.stat().st_size
    if size != entry.size:
        raise ChecksumError(f"{where}: size {size} but the manifest says {entry.size}")
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise ChecksumError(f"{where}: sha256 {digest} does not match the manifest's {entry.sha256}")


def _verify_tree(root: Path, manifest: Manifest, uri: str | os.PathLike, max_workers: int) -> None:
    def check(rel: str) -> None:
        p = root / rel
        if not p.is_file():
            raise NotPublishedError(f"{join_uri(uri, rel)}: listed in the manifest but missing")
        _verify_file(p, manifest.files[rel], join_uri(uri, rel))

    with ThreadPoolExecutor(max_workers) as pool:
        list(pool.map(check, manifest.files))


def _cache_entry_intact(entry: Path, manifest: Manifest) -> bool:
    # Entries are renamed into place only after full verification; a size check catches later meddling cheaply.
    return entry.is_dir() and all(
        (entry / rel).is_file() and (entry / rel).stat().st_size == e.size for rel, e in manifest.files.items()
    )


def _fetch_to_cache(uri: str, manifest: Manifest, cfg: StorageConfig) -> Path:
    cache = cfg.resolved_cache_dir()
    entry = cache / manifest.digest()
    if _cache_entry_intact(entry, manifest):
        return entry
    cache.mkdir(parents=True, exist_ok=True)
    if entry.exists():
        shutil.rmtree(entry, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache))
    try:
        bucket, key = split_s3(uri)
        pre = _prefix(key)
        from boto3.s3.transfer import create_transfer_manager

        with _bar(cfg, manifest.total_bytes, f"download {uri}") as bar, _s3_errors("download", uri, cfg):
            with create_transfer_manager(_client(cfg), _transfer_config(cfg)) as tm:
                futures = []
                for rel in manifest.files:
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    futures.append((rel, tm.download(bucket, pre + rel, str(tmp / rel), subscribers=[_Progress(bar)])))
                for rel, fut in futures:
                    try:
                        with _s3_errors("download", f"s3://{bucket}/{pre}{rel}", cfg):
                            fut.result()
                    except StorageNotFoundError:
                        raise NotPublishedError(f"s3://{bucket}/{pre}{rel}: listed in the manifest but missing") from None
        _verify_tree(tmp, manifest, uri, cfg.max_workers)
        try:
            tmp.rename(entry)
        except OSError:
            # Another process published the same entry first; theirs is as good as ours.
            if not _cache_entry_intact(entry, manifest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def get_dir(
    uri: str | os.PathLike, dest: str | os.PathLike | None = None, *, config: StorageConfig | None = None
) -> Path:
    """A verified local copy of a published folder.

    ``dest=None``: the cache entry for an S3 folder (treat it as read-only), or the local folder
    itself after verification. With ``dest``: a copy there (assembled under a temporary name,
    then renamed; ``dest`` must not exist yet). Raises NotPublishedError without a manifest and
    ChecksumError naming the file whose content differs from the manifest.
    """
    cfg = _cfg(config)
    manifest = read_manifest(uri, config=cfg)
    if is_s3(uri):
        src = _fetch_to_cache(str(uri), manifest, cfg)
    else:
        src = Path(uri)
        _verify_tree(src, manifest, uri, cfg.max_workers)
    if dest is None:
        return src
    out = Path(dest)
    if out.exists():
        raise StorageError(f"get {uri}: destination {out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel in manifest.files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, tmp / rel)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
