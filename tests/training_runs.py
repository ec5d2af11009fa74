"""What the SFT and RL resume tests share: running a stage in a clean child process, killing it
at a step, and comparing the saved weights; and the inputs of a pipeline training step."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

from safetensors.torch import load_file


def clean_env() -> dict[str, str]:
    """This environment without a distributed rendezvous or tracking server leaking in, one thread."""
    env = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    env["OMP_NUM_THREADS"] = "1"
    # DeepSpeed compiles its ops on first use: one compiler at a time (each takes about 1.5 GiB)
    env.setdefault("MAX_JOBS", "1")
    return env


def run(args: list[str], timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=clean_env(), timeout=timeout)


def sigkill_at_step(stage: str, config_path, step: int) -> str:
    """Python source that runs ``lad.train.<stage>`` on the config and SIGKILLs itself after ``step``."""
    return textwrap.dedent(f"""
        import os, signal
        from lad.train.{stage} import load_config, train_{stage}
        def on_step(step):
            if step == {step}:
                os.kill(os.getpid(), signal.SIGKILL)
        train_{stage}(load_config({str(config_path)!r}), on_step=on_step)
    """)


def final_weights(out_dir) -> dict:
    return load_file(str(out_dir / "model" / "model.safetensors"))


def max_weight_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def step_inputs(folder: Path) -> tuple[Path, Path]:
    """(starting model, data prep output) for ``steps.train``: the tiny model and 40 countdown prompts."""
    from lad.modeling import build_tiny_model
    from lad.pipeline.steps import prep

    model, tok = build_tiny_model("1m", seed=0)
    model.save_pretrained(folder / "init")
    tok.save_pretrained(folder / "init")
    prep([{"name": "synthetic/countdown", "role": "train", "synthetic": {"task": "countdown", "n": 40, "seed": 0},
           "decontaminate": False}], folder / "data")
    return folder / "init", folder / "data"


def step_weights(model_out) -> dict:
    """The weights a training step wrote into its output folder."""
    return load_file(str(Path(model_out) / "model.safetensors"))
