"""GGUF files as ordinary Hugging Face checkpoints: each file is converted once, into a folder in
the local cache named by the file's sha256, which every stage then loads like any other.

transformers reads GGUF (``from_pretrained(dir, gguf_file=...)``, with the ``gguf`` package) and
dequantizes it to float32, but the model it returns is marked as quantized and refuses
``save_pretrained``; its weights are therefore copied into a model built from the same config,
which saves normally (safetensors, tokenizer with its chat template, generation config, and a
model card naming the source file and its sha256).

Bad files are refused before transformers sees them, each with one line naming the file: not a
GGUF file (wrong magic bytes), corrupt or truncated (the reader cannot map every tensor), an
architecture transformers cannot build.

A conversion writes inside a work folder ``.partial-*`` of the cache, locked (flock) for as long
as its process lives, and renames the finished checkpoint out of it. A process killed mid-way
leaves its work folder behind, unlocked: every later call removes such folders, and never one
whose lock is held, which is a conversion still running in another process. The kernel drops a
lock when its process dies, however it dies, so no pid or timeout is guessed at.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import torch

from lad.modeling import ModelError, save_model

MAGIC = b"GGUF"
PARTIAL = ".partial-"
# what lad before the locked work folders left after a crash (save_model's temp folder, or the
# unrenamed .partial- folder); no process holds a lock on either
_LEGACY_PARTIAL = ".." + PARTIAL[1:]
EXTRAS_HINT = "pip install 'lad[models]' (or: pip install gguf accelerate)"


class GGUFError(ModelError):
    """A GGUF file that cannot become a model, or a missing package to read one; the message names the file."""


def cache_root() -> Path:
    """Where converted GGUF files live: ``gguf/`` in the storage cache ($LAD_CACHE_DIR or ~/.cache/lad/storage)."""
    from lad.storage import StorageConfig

    return StorageConfig().resolved_cache_dir() / "gguf"


def _require(module: str, path: Path) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise GGUFError(f"GGUF file {path}: reading it needs the {module!r} package, which is not installed; {EXTRAS_HINT}") from None


def inspect_gguf(path: Path) -> dict:
    """Architecture, name and size of a GGUF file, after checking that it is whole.

    Raises GGUFError naming the file when it is not GGUF, does not parse, or is truncated.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(len(MAGIC))
    if head != MAGIC:
        raise GGUFError(f"GGUF file {path}: not a GGUF file (expected the magic bytes b'GGUF' at the start, found {head!r})")
    _require("gguf", path)
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as err:  # the reader raises whatever numpy does on short or garbled data (cut anywhere)
        raise GGUFError(f"GGUF file {path}: corrupt or truncated ({size:,} bytes; {type(err).__name__}: {err}); "
                        "expected a complete GGUF file") from None
    field = reader.fields.get("general.architecture")
    if field is None:
        raise GGUFError(f"GGUF file {path}: no general.architecture field; expected a model GGUF file")
    name = reader.fields.get("general.name")
    return {"architecture": str(field.contents()), "name": str(name.contents()) if name is not None else path.stem,
            "tensors": len(reader.tensors), "size": size}


def _supported(architecture: str, path: Path) -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    # transformers renames a few llama.cpp architectures (qwen2moe -> qwen2_moe, gpt-oss -> gpt_oss)
    # before its own check; comparing without separators admits those spellings too.
    known = {a.replace("_", "").replace("-", "") for a in GGUF_SUPPORTED_ARCHITECTURES} - {"general", "tokenizer"}
    if architecture.replace("_", "").replace("-", "") not in known:
        raise GGUFError(f"GGUF file {path}: architecture {architecture!r} (general.architecture) cannot be loaded; "
                        f"expected one of {sorted(known)}")


def load_gguf(path: Path):
    """(model, tokenizer) of a GGUF file, float32, as a model that ``save_pretrained`` accepts."""
    _require("accelerate", path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    config = copy.deepcopy(loaded.config)
    del config.quantization_config  # the marker that makes save_pretrained refuse
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config.bos_token_id is None:
        model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.eval(), tokenizer


def _held_elsewhere(fd: int) -> bool:
    """Whether another process holds the lock of the open folder ``fd``; if not, it is taken now."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def sweep_partials(root: Path) -> list[Path]:
    """Remove the work folders that crashed conversions left in ``root``; returns those removed.

    A folder whose lock another process holds is a live conversion and is kept.
    """
    removed = []
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        if not path.name.startswith((PARTIAL, _LEGACY_PARTIAL)) or not path.is_dir():
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # finished or removed meanwhile
            continue
        try:
            if not _held_elsewhere(fd):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def partial_folder(root: Path, digest: str) -> Iterator[Path]:
    """A new work folder ``root/.partial-<digest[:12]>-<random>``, locked until the block ends,
    then removed with whatever is left in it."""
    root.mkdir(parents=True, exist_ok=True)
    # Made under another name and locked before it is renamed into view: a sweep never sees a
    # work folder whose owner has not locked it yet.
    claim = Path(tempfile.mkdtemp(prefix=f".claim-{digest[:12]}-", dir=root))
    fd = os.open(claim, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        work = root / f"{PARTIAL}{digest[:12]}-{uuid.uuid4().hex[:8]}"
        try:
            claim.rename(work)
        except OSError:
            shutil.rmtree(claim, ignore_errors=True)
            raise
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        os.close(fd)


def _complete(entry: Path) -> bool:
    # Entries appear only by rename after a full save, so a present config and weights mean whole.
    return (entry / "config.json").is_file() and (entry / "model.safetensors").is_file()


def convert_gguf(path: str | Path, *, root: Path | None = None, origin: str | None = None) -> Path:
    """The Hugging Face folder of the GGUF file ``path``, converted on first use into
    ``root / <sha256 of the file>`` (``root`` defaults to :func:`cache_root`); ``origin``, the
    reference it was reached by (default: the path), goes into the model card."""
    from lad.storage import sha256_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path}: no such file")
    root = cache_root() if root is None else root
    sweep_partials(root)
    digest = sha256_file(path)
    entry = root / digest
    if _complete(entry):
        return entry
    header = inspect_gguf(path)
    _supported(header["architecture"], path)
    print(f"converting GGUF {path} ({header['architecture']}, sha256 {digest[:12]}) once into {entry}", file=sys.stderr, flush=True)
    model, tokenizer = load_gguf(path)
    card = {"name": f"{path.stem} (converted from GGUF)", "base_model": path.name,
            "source": {"file": path.name, "origin": origin or str(path), "sha256": digest, "format": "gguf", **header}}
    # Saved in a work folder, then renamed: a crash leaves only a .partial folder, which no lookup
    # takes for whole, and a rename never replaces an entry another process put there first.
    with partial_folder(root, digest) as work:
        save_model(model, tokenizer, work / "model", card)
        try:
            (work / "model").rename(entry)
        except OSError:
            if not _complete(entry):
                raise
    return entry
