"""End-to-end SFT runs through DeepSpeed on CPU (gloo): exact resume after SIGKILL, and two
data-parallel processes (torchrun) against one process with the same global batch."""

import signal
import sys

import pytest
import yaml

from training_runs import final_weights, max_weight_diff, run, sigkill_at_step

STEPS, EVERY = 6, 3


def _config(tmp, name, **train):
    cfg = {
        "model": "tiny:1m",
        "output_dir": str(tmp / name),
        "data": {"synthetic": {"tasks": ["countdown", "arithmetic"], "n_per_task": 48}, "max_seq_len": 256},
        "train": {"micro_batch_size": 4, "grad_accum": 2, "max_steps": STEPS, "log_every": 1, **train},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "engine": {"name": "deepspeed", "zero_stage": 1},
        "checkpoint": {"every_steps": EVERY, "keep_last": 2},
        "heldout": {"tasks": []},
        "tracking": {"enabled": False},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The reference: STEPS steps in one process, grad_accum 2 x micro-batch 4 = global batch 8."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = _config(tmp, "straight")
    proc = run([sys.executable, "-m", "lad.cli", "sft", str(cfg)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "straight"


def test_sigkill_then_resume_matches_the_straight_run(straight, tmp_path):
    cfg = _config(tmp_path, "killed")
    # Killed at step EVERY + 2: the checkpoint of step EVERY is complete, two later updates are lost.
    script = sigkill_at_step("sft", cfg, EVERY + 2)
    proc = run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpts = tmp_path / "killed" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [f"step_{EVERY:08d}"]
    assert not (tmp_path / "killed" / "model").exists()

    proc = run([sys.executable, "-m", "lad.cli", "sft", str(cfg), "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {ckpts / f'step_{EVERY:08d}'} (step {EVERY} of {STEPS})" in proc.stdout
    assert max_weight_diff(final_weights(straight), final_weights(tmp_path / "killed")) < 1e-6


def test_two_processes_match_one_process_with_the_same_global_batch(straight, tmp_path):
    # 2 ranks x grad_accum 1 x micro-batch 4 = the straight run's global batch of 8.
    cfg = _config(tmp_path, "ddp", grad_accum=1)
    proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lad.cli", "sft", str(cfg)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Same update up to the order of float additions (micro-batch sum vs all-reduce).
    assert max_weight_diff(final_weights(straight), final_weights(tmp_path / "ddp")) < 1e-5
