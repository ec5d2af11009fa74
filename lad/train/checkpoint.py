"""Training checkpoints: engine state, RNG states and the trainer's position, written atomically.

Layout under the checkpoint root::

    step_00000020/           one complete checkpoint
        engine...            what the engine writes (model, optimizer, scheduler)
        rng_rank0.pt         python, numpy, torch (and CUDA) RNG states, one file per rank
        trainer_state.json   step, data position, config fingerprint; written last
    .step_00000030.tmp/      a checkpoint being written (ignored; removed by the next save)

A checkpoint only appears under its final name once every rank has finished writing it, by one
rename, so a process killed at any moment leaves either the previous complete checkpoint or the
new one, never a half one that ``--resume`` would load.

A run may also publish each checkpoint under a remote prefix (``s3://...``, or a folder) that
outlives its machine: ``<remote>/step_00000020/`` through ``lad.storage.put_dir``, files first
and the manifest last, so a publish cut short is never taken; a resume on a fresh machine fetches
the newest published one first (``fetch_published``).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lad.storage import MANIFEST_NAME, delete, get_dir, is_published, join_uri, list_uri, put_dir
from lad.train.engine import TrainEngine, dist_info

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Optional[Path]:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        # numpy's state holds an ndarray; as a tensor the file loads with weights_only=True.
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(engine: TrainEngine, root: str | Path, step: int, trainer_state: dict, *, keep_last: int) -> Path:
    """Write checkpoint ``step`` (a collective call on every rank); keep the newest ``keep_last``."""
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f".{checkpoint_name(step)}.tmp"
    if engine.rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left by a run killed while saving this very step
            shutil.rmtree(tmp)
        tmp.mkdir()
    engine.barrier()
    engine.save_state(tmp)
    torch.save(rng_state(), tmp / f"rng_rank{engine.rank}.pt")
    engine.barrier()
    if engine.rank == 0:
        (tmp / STATE_FILE).write_text(json.dumps({**trainer_state, "step": step}, indent=2, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old)
        for stale in root.glob(".step_*.tmp"):
            shutil.rmtree(stale)
    engine.barrier()
    return final


def load_checkpoint(engine: TrainEngine, path: str | Path) -> dict:
    """Restore engine and this rank's RNG state from ``path``; returns the trainer state."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    rng_file = path / f"rng_rank{engine.rank}.pt"
    if not rng_file.is_file():
        raise FileNotFoundError(f"checkpoint {path} has no RNG state for rank {engine.rank}: it was written by fewer processes")
    engine.load_state(path)
    set_rng_state(torch.load(rng_file, weights_only=True))
    return json.loads(state_file.read_text())


def resume_latest(engine: TrainEngine, root: str | Path, trajectory: dict, *, total_steps: int) -> Optional[dict]:
    """``--resume``: restore the newest complete checkpoint under ``root`` into ``engine`` and
    return its trainer state (None when there is none: the run starts fresh).

    ``trajectory`` holds the settings the run's path depends on (saved in the trainer state as
    "trajectory"); a checkpoint written under other ones is refused, since continuing it would
    give a run that neither setting describes.
    """
    ckpt = latest_checkpoint(root)
    if ckpt is None:
        return None
    state = load_checkpoint(engine, ckpt)
    if state["trajectory"] != json.loads(json.dumps(trajectory)):
        raise ValueError(f"--resume: checkpoint {ckpt} was written with different training settings; use a new output_dir")
    if engine.rank == 0:
        print(f"resuming from {ckpt} (step {state['step']} of {total_steps})")
    return state


def published_checkpoints(remote: str) -> list[tuple[int, str]]:
    """Checkpoints published in full under ``remote`` as (step, uri), oldest first."""
    steps = set()
    for uri in list_uri(remote):
        parent, _, name = uri.rpartition("/")
        folder = parent.rpartition("/")[2]
        m = _NAME.match(folder)
        if name == MANIFEST_NAME and m and uri == join_uri(join_uri(remote, folder), MANIFEST_NAME):
            steps.add(int(m.group(1)))
    found = [(step, join_uri(remote, checkpoint_name(step))) for step in sorted(steps)]
    return [(step, uri) for step, uri in found if is_published(uri)]


def publish_checkpoint(path: str | Path, remote: str, *, keep_last: int) -> str:
    """Publish the complete checkpoint ``path`` under ``remote``; keep the newest ``keep_last`` there.
    Returns its URI."""
    path = Path(path)
    uri = join_uri(remote, path.name)
    put_dir(path, uri)
    for _, old in published_checkpoints(remote)[:-keep_last]:
        delete(join_uri(old, MANIFEST_NAME))  # unpublished first: never taken while half deleted
        delete(old)
    return uri


def fetch_published(engine: TrainEngine, remote: str, root: str | Path) -> Optional[int]:
    """Put the newest checkpoint published under ``remote`` into ``root`` (by each machine's first
    process, the others wait), unless ``root`` already holds it or a newer one; its step, or None
    when nothing is published. A collective call."""
    root = Path(root)
    found = published_checkpoints(remote)
    if found and dist_info()[2] == 0:
        step, uri = found[-1]
        local = list_checkpoints(root)
        if not local or local[-1][0] < step:
            if (root / checkpoint_name(step)).exists():  # a stale copy without its state file
                shutil.rmtree(root / checkpoint_name(step))
            get_dir(uri, root / checkpoint_name(step))
            print(f"fetched checkpoint {uri} into {root}", flush=True)
    engine.barrier()
    return found[-1][0] if found else None
