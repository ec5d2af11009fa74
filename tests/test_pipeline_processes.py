"""The training step on a pod with several GPUs: ``steps.train(processes=N)`` launches torchrun with
one worker (lad.pipeline.worker) per GPU. On CPU, 2 gloo processes through the step function
itself train exactly as one process with the same global batch does."""

import os
import signal
import subprocess
import sys
import time

import pytest
from training_runs import clean_env, max_weight_diff, step_inputs, step_weights

from lad.pipeline.steps import StepError, train

SETTINGS = dict(
    engine="deepspeed", rollout_engine="native", steps=2, prompts_per_step=4, group_size=4, max_new_tokens=12,
    micro_batch_size=4, mini_batch_size=8, lr=3e-3, experiment="processes",
    # prompts_per_call fixes the sampling calls, so 1 and 2 processes sample the same completions
    overrides={"rollout.prompts_per_call": 2, "reward.answer_pattern": "([0-9])", "reward.format_weight": 0.5},
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return step_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture
def env(tmp_path, monkeypatch):
    env = {**clean_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key in ("MLFLOW_TRACKING_URI", "OMP_NUM_THREADS"):
        monkeypatch.setenv(key, env[key])
    return env


def test_two_processes_through_the_step_train_as_one(inputs, tmp_path, env, capfd):
    init, data = inputs
    code = f"from lad.pipeline.steps import train; train({str(init)!r}, {str(data)!r}, {str(tmp_path / 'one')!r}, **{SETTINGS!r})"
    one = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=400)
    assert one.returncode == 0, one.stderr[-3000:]

    results = train(init, data, tmp_path / "two", processes=2, **SETTINGS)
    out = capfd.readouterr().out
    assert "training with 2 processes: -m torch.distributed.run --standalone --nproc-per-node=2 -m lad.pipeline.worker" in out
    assert results["train/steps"] == 2
    assert max_weight_diff(step_weights(tmp_path / "one"), step_weights(tmp_path / "two")) < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".two-")) == []  # the scratch folder is gone


def test_a_failing_worker_fails_the_step_with_its_status(inputs, tmp_path, env):
    init, data = inputs
    with pytest.raises(StepError, match=r"^training: torchrun with 2 processes exited with status 1 "):
        train(init, data, tmp_path / "bad", processes=2, **{**SETTINGS, "prompts_per_step": 3, "mini_batch_size": 12,
                                                              "micro_batch_size": 2})
    assert not (tmp_path / "bad").exists()


def test_several_processes_need_the_deepspeed_engine(inputs, tmp_path):
    init, data = inputs
    with pytest.raises(StepError, match=r"^parameter train_engine: 'torch' trains in one process; 2 processes \(gpus_per_node\) need 'deepspeed'$"):
        train(init, data, tmp_path / "m", processes=2, **{**SETTINGS, "engine": "torch"})
    with pytest.raises(StepError, match=r"^parameter gpus_per_node: expected >= 1, got 0$"):
        train(init, data, tmp_path / "m", processes=0, **SETTINGS)



def processes_holding(text: str) -> list[int]:
    """Pids of this machine's processes whose command line mentions ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def test_sigterm_ends_the_step_and_every_training_process(inputs, tmp_path, env):
    init, data = inputs
    code = (f"from lad.pipeline.steps import train; "
            f"train({str(init)!r}, {str(data)!r}, {str(tmp_path / 'm')!r}, processes=2, **{SETTINGS!r})")
    step = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in step.stdout:  # the workers are up once they report on their model
            if "training with 2 processes" in line:
                break
        deadline = time.monotonic() + 120
        while len(processes_holding(str(tmp_path))) < 3 and time.monotonic() < deadline:  # torchrun and its 2 workers
            time.sleep(0.2)
        assert len(processes_holding(str(tmp_path))) >= 3
        step.send_signal(signal.SIGTERM)
        assert step.wait(timeout=60) == 143
    finally:
        if step.poll() is None:
            step.kill()
    assert processes_holding(str(tmp_path)) == []
    assert not (tmp_path / "m").exists()
