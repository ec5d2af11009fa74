"""Every training stage on a real pretrained model: SmolLM2-135M-Instruct from the packaged GGUF
(converted once per session, see conftest.smollm2_cache). Sizes are the smallest that still show
the behaviour: a few steps, G = 4, P = 2, short completions."""

import json
import math
import signal
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from servers import mlflow_store  # noqa: F401
from training_runs import final_weights, max_weight_diff, run, sigkill_at_step

from lad.modeling import load_model, load_model_tokenizer, read_card

pytestmark = pytest.mark.usefixtures("release_memory")  # its in-process SFT would add to the next test's trainer

NAME = "smollm2-135m-instruct"
ARITHMETIC = {"synthetic": {"tasks": ["arithmetic"], "n_per_task": 8, "difficulties": [1], "seed": 0}}
# Countdown's checker runs in the trainer's process: no math-verify worker pool, whose forked
# workers would add their own gigabytes beside a 135M-parameter trainer.
COUNTDOWN = {"synthetic": {"tasks": ["countdown"], "n_per_task": 8, "difficulties": [1], "seed": 0}}


@pytest.fixture
def named(smollm2_cache, monkeypatch):
    """The name smollm2-135m-instruct resolving to the session's conversion."""
    monkeypatch.setenv("LAD_CACHE_DIR", str(smollm2_cache))
    return NAME


def chatml(messages: list[dict]) -> str:
    """ChatML written out by hand: the format SmolLM2-135M-Instruct's template must produce."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def test_data_prep_renders_every_prompt_with_the_models_own_chat_template(named, tmp_path):
    import pyarrow.parquet as pq

    from lad.data.config import PrepConfig
    from lad.data.prep import run_prep
    from lad.train.rl import PromptSource, load_prompts

    tok = load_model_tokenizer(named)
    base = {"model": named, "shuffle": False,
            "sources": [{"name": "gsm8k", "adapter": "gsm8k", "uri": "lad://gsm8k_test.jsonl", "limit": 40, "decontaminate": False}]}
    report = run_prep(PrepConfig.model_validate({**base, "output": str(tmp_path / "all")}))
    rows = pq.read_table(tmp_path / "all" / "train.parquet").to_pylist()
    lengths = [len(tok(chatml(r["prompt"]), add_special_tokens=False)["input_ids"]) for r in rows]
    assert len(rows) == 40 and len(set(lengths)) > 10
    seen = report["model_prompts"]
    assert seen["first_prompt"] == chatml(rows[0]["prompt"])
    assert seen["first_prompt"].startswith("<|im_start|>system\nYou are a careful assistant. Think step by step")
    assert (seen["model"], seen["eos_token"]) == (NAME, "<|im_end|>")
    assert report["sources"]["gsm8k"]["prompt_tokens"] == {
        "rows": 40, "min": min(lengths), "mean": round(sum(lengths) / 40, 2), "max": max(lengths)}

    # the longest prompts over a limit become bad rows, named by line; what is kept fits lad train's limit
    limit = sorted(lengths)[29]
    report = run_prep(PrepConfig.model_validate({**base, "output": str(tmp_path / "fit"), "max_prompt_tokens": limit,
                                                 "on_bad_row": "skip"}))
    too_long = [i for i, n in enumerate(lengths) if n > limit]
    assert 1 <= len(too_long) <= 10
    assert [(e["where"], e["field"], e["reason"]) for e in report["errors"]] == [
        (f"line {i + 1}", "prompt", f"{lengths[i]} tokens with the chat template of {NAME}, over max_prompt_tokens={limit}")
        for i in too_long]
    kept, dropped = load_prompts(PromptSource(path=str(tmp_path / "fit" / "train.parquet")), tok, limit, "data.train")
    assert (len(kept), dropped) == (40 - len(too_long), 0)


def test_sft_on_the_real_model_lowers_its_loss(named, tmp_path):
    from mlflow import MlflowClient

    from lad.train.sft import SFTConfig, train_sft

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = SFTConfig.model_validate({
        "model": named, "output_dir": str(tmp_path / "out"),
        # 8 demonstrations in batches of 4: the 6 steps see each one 3 times, so the loss must fall
        "data": {**ARITHMETIC, "max_seq_len": 256},
        "train": {"micro_batch_size": 4, "max_steps": 6, "log_every": 1},
        "optim": {"lr": 1e-4, "warmup_steps": 0}, "engine": {"name": "torch"},
        "checkpoint": {"every_steps": 100}, "heldout": {"n_per_task": 1, "max_new_tokens": 8, "tasks": ["arithmetic"]},
        "tracking": {"tracking_uri": uri, "experiment": "sft-real"},
    })
    results = train_sft(cfg)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sft-real").experiment_id])
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0]  # the first epoch's batches, seen a third time
    assert results["train/steps"] == 6
    card = read_card(tmp_path / "out" / "model")
    assert card["base_model"] == NAME
    model, tok = load_model(tmp_path / "out" / "model")
    assert model.config.model_type == "llama" and tok.eos_token == "<|im_end|>"


def rl_config(tmp, name: str, model_dir, objective: str):
    """A two-step RL run on the real model, checkpointed after step 1, as a YAML file."""
    cfg = {
        "model": str(model_dir), "output_dir": str(tmp / name),
        "data": {"train": COUNTDOWN, "max_prompt_len": 256},
        "rollout": {"engine": "native", "n": 4, "max_new_tokens": 32, "temperature": 1.0},
        "algorithm": {"objective": objective},
        # the answer is the last digit, and half the reward is for giving one at all: the 135M model
        # rarely boxes in 32 tokens, and with these settings its groups' rewards differ (advantages not all zero)
        "reward": {"answer_pattern": "([0-9])", "format_weight": 0.5},
        "train": {"prompts_per_step": 2, "micro_batch_size": 4, "max_steps": 2, "samples_every": 0, "seed": 0},
        "engine": {"name": "torch"}, "optim": {"lr": 1e-5, "warmup_steps": 0}, "eval": {"at_start": False, "every_steps": 0},
        "checkpoint": {"every_steps": 1, "keep_last": 1}, "tracking": {"enabled": False},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def lad_train(*args: str):
    proc = run([sys.executable, "-m", "lad.cli", "train", *map(str, args)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def lad_run(smollm2_dir, tmp_path_factory):
    """An uninterrupted LAD run of two steps (in a child process, one thread, like the resumed one)."""
    tmp = tmp_path_factory.mktemp("rl-real")
    lad_train(rl_config(tmp, "lad", smollm2_dir, "lad"))
    return tmp / "lad"


@pytest.mark.parametrize("objective", ["lad", "grpo"])
def test_rl_steps_on_the_real_model_change_its_weights(smollm2_dir, lad_run, objective, tmp_path):
    out = lad_run
    if objective == "grpo":
        lad_train(rl_config(tmp_path, "grpo", smollm2_dir, "grpo"))
        out = tmp_path / "grpo"
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(math.isfinite(s["actor/loss"]) for s in steps)
    assert any(s["reward/zero_variance_group_frac"] < 1 for s in steps)
    for s in steps:
        # the trainer's recomputed log-probs are the native engine's sampling log-probs
        assert s["rollout/logprob_diff_abs_max"] < 1e-4
    before, after = load_file(str(smollm2_dir / "model.safetensors")), final_weights(out)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed and len(changed) > len(before) // 2


def test_rl_resumed_after_sigkill_ends_equal_to_the_uninterrupted_run(smollm2_dir, lad_run, tmp_path):
    cfg = rl_config(tmp_path, "lad", smollm2_dir, "lad")
    proc = run([sys.executable, "-c", sigkill_at_step("rl", cfg, 2)], timeout=600)  # killed before the final save
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpt = tmp_path / "lad" / "checkpoints" / "step_00000001"
    assert [p.name for p in ckpt.parent.iterdir()] == [ckpt.name] and not (tmp_path / "lad" / "model").exists()
    proc = lad_train(cfg, "--resume")
    assert f"resuming from {ckpt} (step 1 of 2)" in proc.stdout
    assert max_weight_diff(final_weights(lad_run), final_weights(tmp_path / "lad")) < 1e-6
    steps = [json.loads(line)["step"] for line in (tmp_path / "lad" / "steps.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_evaluation_with_native_and_hf_gives_the_same_answers(smollm2_dir, tmp_path):
    from lad.evaluation.config import EvalConfig
    from lad.evaluation.stage import run_eval

    rows, summaries = {}, {}
    for engine in ("native", "hf"):
        # temperature 1e-6: both engines sample the argmax, so their answers must agree exactly
        cfg = EvalConfig(model=str(smollm2_dir), output=str(tmp_path / engine), engine=engine, label="smollm2",
                         benchmarks=[{"name": "gsm8k", "k": 2, "limit": 2, "temperature": 1e-6, "max_new_tokens": 48}],
                         bootstrap_resamples=10)
        summaries[engine] = run_eval(cfg)
        rows[engine] = [json.loads(line) for line in (tmp_path / engine / "samples" / "gsm8k.jsonl").read_text().splitlines()]
    assert len(rows["native"]) == 4 and summaries["native"]["run"] == {"gsm8k": {"reused_samples": 0, "generated_samples": 4}}
    keep = ("problem_id", "sample", "response", "answer", "correct", "tokens", "finish_reason")
    assert [{k: r[k] for k in keep} for r in rows["native"]] == [{k: r[k] for k in keep} for r in rows["hf"]]
    assert all(0 < r["tokens"] <= 48 and r["response"] for r in rows["native"])
    native, hf = (summaries[e]["benchmarks"]["gsm8k"] for e in ("native", "hf"))
    assert native["avg@2"] == hf["avg@2"] and native["pass@2"] == hf["pass@2"]


def test_the_registered_champion_answers_a_chat_request_as_the_projects_greedy_rollout(smollm2_dir, mlflow_store):
    """The pipeline's register step on the real model (evaluated greedily, 12 tokens, with the native
    engine): ``models:/...@champion`` applies the model's own chat template and answers a chat
    request token for token as the project's greedy rollout of the same messages (transformers
    generate), by default and with a request's own max_tokens."""
    import mlflow

    from lad.evaluation.summary import aggregate, benchmark_summary
    from lad.pipeline.steps import register
    from lad.rollout import SamplingParams, build_rollout

    sample = {"correct": True, "answer": "5", "response": "5", "tokens": 1, "finish_reason": "stop", "reason": "correct"}
    bench = benchmark_summary("gsm8k", "math", 1, {0: [sample]}, {0: {"5": 0}}, dist_n=[1], resamples=10)
    summary = {"label": "smollm2", "model": str(smollm2_dir), "engine": "native", "benchmarks": {"gsm8k": bench},
               "aggregate": aggregate({"gsm8k": bench}),
               "settings": {"gsm8k": {"k": 1, "sampling": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 12, "stop": []}}}}
    result = register(smollm2_dir, summary, name="smollm2-chat", metric="gsm8k/avg@k")
    assert result["promoted"]

    messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is 2+3?"}]
    model = mlflow.pyfunc.load_model("models:/smollm2-chat@champion")
    reference = build_rollout("hf", *load_model(smollm2_dir))
    for request, tokens in (({}, 12), ({"max_tokens": 4}, 4)):
        ours = reference.generate([messages], SamplingParams(temperature=0, max_new_tokens=tokens))[0][0]
        answer = model.predict({"messages": messages, **request})
        assert answer["choices"] == [{"index": 0, "message": {"role": "assistant", "content": ours.text},
                                      "finish_reason": ours.finish_reason}]
        assert (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]) == (
            len(ours.prompt_token_ids), len(ours.token_ids))
        assert answer["usage"]["prompt_tokens"] == len(load_model_tokenizer(smollm2_dir)(chatml(messages), add_special_tokens=False)["input_ids"])
    assert ours.text and len(ours.token_ids) == 4


def test_local_pipeline_from_the_real_model_registers_a_version(smollm2_cache, tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    import mlflow

    from lad.tracking import Tracker, TrackingConfig

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)

    small = {"base_model": NAME, "sft_steps": 1, "sft_batch_size": 4, "sft_problems": 64, "sft_lr": 1e-5, "sft_heldout_problems": 0, "steps": 1,
             "prompts_per_step": 2, "group_size": 4, "mini_batch_size": 0, "micro_batch_size": 4, "max_new_tokens": 16, "lr": 1e-5,
             "train_eval_prompts": 0, "eval_benchmarks": "gsm8k", "eval_k": 2, "eval_limit": 1, "eval_max_new_tokens": 16,
             "promotion_metric": "gsm8k/avg@k", "promotion_min_score": 0}
    sets = [arg for key, value in small.items() for arg in ("--set", f"{key}={value}")]
    env = {**os.environ, "LAD_CACHE_DIR": str(smollm2_cache), "OMP_NUM_THREADS": "1"}  # every step finds the conversion done
    done = subprocess.run([sys.executable, "-m", "lad.cli", "pipeline", "run", "--local", "--output", str(tmp_path / "out"), *sets],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "converting GGUF" not in done.stdout + done.stderr
    assert "registered model: lad-policy v1 (alias champion" in done.stdout
    store = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # restored afterwards, whatever Tracker sets
    uris = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        (version,) = Tracker(TrackingConfig(tracking_uri=store)).list_versions("lad-policy")
    finally:
        mlflow.set_tracking_uri(uris[0])
        mlflow.set_registry_uri(uris[1])
    assert version.tags["base_model"] == NAME
