"""A pre-empted training step resumes: the step function publishes a checkpoint every N steps to
S3 (moto's server) under a prefix named by the run and the task, is SIGKILLed mid-run in its own
process, and its retry takes the newest fully published checkpoint (never a half-published one)
and ends with the weights of an uninterrupted run."""

import subprocess
import sys
import textwrap

import pytest
from servers import s3, s3_server  # noqa: F401
from training_runs import clean_env, max_weight_diff, step_inputs, step_weights

from lad import storage
from lad.pipeline.steps import checkpoint_prefix
from lad.storage import MANIFEST_NAME
from lad.train.checkpoint import published_checkpoints

STEPS, EVERY, KILL_AT = 4, 2, 3
SETTINGS = dict(
    engine="torch", rollout_engine="native", steps=STEPS, prompts_per_step=4, group_size=4, max_new_tokens=12,
    micro_batch_size=16, lr=3e-3, checkpoint_every=EVERY, experiment="preempt",
    # an untrained model never answers: half-weight format credit for any digit gives its groups reward variance
    overrides={"reward.answer_pattern": "([0-9])", "reward.format_weight": 0.5},
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return step_inputs(tmp_path_factory.mktemp("inputs"))


def run_step(inputs, out, checkpoint_uri, env, kill_at=0) -> subprocess.CompletedProcess:
    """steps.train in a process of its own, as a pod runs it; SIGKILLed after step ``kill_at`` (0: never)."""
    init, data = inputs
    code = textwrap.dedent(f"""
        import os, signal
        from lad.pipeline import steps
        report = steps.progress
        def progress(step, total):
            report(step, total)
            if step == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
        steps.progress = progress
        steps.train({str(init)!r}, {str(data)!r}, {str(out)!r}, checkpoint_uri={checkpoint_uri!r}, **{SETTINGS!r})
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=400)


def test_the_prefix_is_named_by_the_run_and_the_task():
    assert checkpoint_prefix("s3://art/pipelines/lad-training/run-7/lad-train/model", "run-7", "train") == \
        "s3://art/lad-checkpoints/run-7/train"
    assert checkpoint_prefix("minio://mlpipeline/v2/artifacts/x/model", "run-7", "train-compare") == \
        "s3://mlpipeline/lad-checkpoints/run-7/train-compare"
    assert checkpoint_prefix("/tmp/local_outputs/lad-train/model", "run-7", "train") == ""  # the local runner
    assert checkpoint_prefix("s3://art/x/model", "", "train") == ""  # outside a pipeline run


def test_a_killed_step_resumes_from_its_last_published_checkpoint(s3, inputs, tmp_path):
    env = {**clean_env(), **s3.server.env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "LAD_CACHE_DIR": str(tmp_path / "cache")}
    prefix = checkpoint_prefix(f"{s3.root}/pipeline/run-1/lad-train/model", "run-1", "train")

    straight = run_step(inputs, tmp_path / "straight", "", env)
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = run_step(inputs, tmp_path / "model", prefix, env, kill_at=KILL_AT)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (tmp_path / "model").exists()
    assert [step for step, _ in published_checkpoints(prefix)] == [EVERY]
    # what a publish cut short leaves: step 3's files without the manifest; it must not be taken
    half = f"{prefix}/step_{KILL_AT:08d}"
    good = storage.get_dir(f"{prefix}/step_{EVERY:08d}")
    storage.put_dir(good, half)
    storage.delete(f"{half}/{MANIFEST_NAME}")
    assert [step for step, _ in published_checkpoints(prefix)] == [EVERY]

    retry = run_step(inputs, tmp_path / "model", prefix, env)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert f"fetched checkpoint {prefix}/step_{EVERY:08d}" in retry.stdout
    assert f"(step {EVERY} of {STEPS})" in retry.stdout
    assert max_weight_diff(step_weights(tmp_path / "straight"), step_weights(tmp_path / "model")) < 1e-6
    # the last step keeps no checkpoint: the published ones are as the killed attempt left them
    assert [step for step, _ in published_checkpoints(prefix)] == [EVERY]


class OneProcess:
    """What fetch_published needs of an engine: a barrier, which one process passes at once."""

    def barrier(self) -> None:
        pass


def test_publishing_keeps_the_newest_and_a_fetch_takes_the_newest_complete_one(tmp_path, capsys):
    from lad.train.checkpoint import STATE_FILE, checkpoint_name, fetch_published, list_checkpoints, publish_checkpoint

    remote = str(tmp_path / "remote")
    for step in (10, 20, 30):
        ckpt = tmp_path / "local" / checkpoint_name(step)
        ckpt.mkdir(parents=True)
        (ckpt / "weights.bin").write_bytes(bytes([step]) * 100)
        (ckpt / STATE_FILE).write_text(f'{{"step": {step}}}')
        assert publish_checkpoint(ckpt, remote, keep_last=2) == f"{remote}/{checkpoint_name(step)}"
    assert [s for s, _ in published_checkpoints(remote)] == [20, 30]
    # a newer one whose publish was cut short (no manifest) is not taken
    storage.put_dir(tmp_path / "local" / checkpoint_name(30), f"{remote}/{checkpoint_name(40)}")
    storage.delete(f"{remote}/{checkpoint_name(40)}/{MANIFEST_NAME}")

    fresh = tmp_path / "fresh"
    assert fetch_published(OneProcess(), remote, fresh) == 30
    assert [s for s, _ in list_checkpoints(fresh)] == [30]
    assert (fresh / checkpoint_name(30) / "weights.bin").read_bytes() == bytes([30]) * 100
    assert f"fetched checkpoint {remote}/{checkpoint_name(30)} into {fresh}" in capsys.readouterr().out
    # a machine that already holds it (or a newer one) fetches nothing
    assert fetch_published(OneProcess(), remote, fresh) == 30
    assert "fetched" not in capsys.readouterr().out
    assert fetch_published(OneProcess(), str(tmp_path / "nothing"), tmp_path / "empty") is None
