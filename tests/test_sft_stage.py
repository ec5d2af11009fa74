"""The SFT stage end to end in one process (torch engine): model with card, metrics, MLflow run;
and the held-out scorer on known-good and known-bad responses."""

import json

import pytest
import yaml

from lad.data.synthetic import demonstration, generate
from lad.modeling import load_model, read_card
from lad.evaluation.heldout import correct, formatted
from lad.train.sft import load_config, train_sft


def test_demonstrations_are_formatted_and_correct_and_junk_is_neither():
    records = [r for t in ("countdown", "arithmetic", "code") for r in generate(t, 3, seed=7, split="test")]
    good = [demonstration(r) for r in records]
    assert all(formatted(r, g) for r, g in zip(records, good))
    assert correct(records, good) == [True] * len(records)
    junk = ["I think it is 4." for _ in records]
    assert not any(formatted(r, j) for r, j in zip(records, junk))
    assert correct(records, junk) == [False] * len(records)
    # formatted but wrong: a boxed wrong number, a code block that fails its tests
    wrong = ["\\boxed{1 + 1 + 1000}" if r["ability"] == "math" else "```python\ndef f(*a):\n    return None\n```" for r in records]
    assert all(formatted(r, w) for r, w in zip(records, wrong))
    assert correct(records, wrong) == [False] * len(records)


def test_heldout_verdicts_complete_the_starter_code_and_reach_class_methods_as_the_reward_does():
    def record(entry: str, starter: str, tests: list[dict]) -> dict:
        spec = json.dumps(tests)
        return {"data_source": "x", "ability": "code", "reward_model": {"style": "rule", "ground_truth": spec},
                "extra_info": {"index": 0, "split": "test", "entry_point": entry, "starter_code": starter, "tests": spec,
                               "test_type": "call"}}

    square = record("sq", "def sq(x):\n", [{"type": "call", "entry_point": "sq", "args": [a], "expected": a * a} for a in (2, 3)])
    add = record("Solution.add", "class Solution:\n    def add(self, a: int, b: int) -> int:\n",
                 [{"type": "call", "entry_point": "Solution.add", "args": [2, 5], "expected": 7}])
    body = "```python\n    return x * x\n```"  # continues the starter code, as a chat model may answer
    method = "```python\nclass Solution:\n    def add(self, a, b):\n        return a + b\n```"
    wrong = "```python\n    return x + x\n```"  # right for 2, wrong for 3
    assert correct([square, add, square], [body, method, wrong]) == [True, True, False]


def test_sft_stage_writes_model_card_metrics_and_mlflow_run(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = {
        "model": "tiny:1m",
        "output_dir": str(tmp_path / "out"),
        "data": {"synthetic": {"tasks": ["countdown", "arithmetic", "code"], "n_per_task": 16}, "max_seq_len": 256},
        "train": {"micro_batch_size": 8, "max_steps": 4, "log_every": 2},
        "engine": {"name": "torch"},
        "checkpoint": {"every_steps": 2},
        "heldout": {"n_per_task": 2, "max_new_tokens": 8},
        "tracking": {"tracking_uri": uri, "experiment": "sft-test"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    results = train_sft(load_config(tmp_path / "c.yaml"))

    assert results["train/steps"] == 4 and results["data/examples"] == 48
    for task in ("countdown", "arithmetic", "code", "all"):
        for metric in ("format", "accuracy", "eos"):
            assert 0.0 <= results[f"heldout/{task}/{metric}"] <= 1.0
    assert results["heldout/all/n"] == 6
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == results
    card = read_card(tmp_path / "out" / "model")
    assert card["base_model"] == "tiny:1m" and card["metrics"] == results and card["config"]["train"]["max_steps"] == 4
    model, tok = load_model(tmp_path / "out" / "model")
    assert model.config.model_type == "qwen2" and tok.eos_token == "<|im_end|>"
    assert [p.name for p in (tmp_path / "out" / "checkpoints").iterdir()] == ["step_00000002"]

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sft-test").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.001" and run.data.params["model"] == "tiny:1m"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [2, 4]
    assert run.data.metrics["heldout/all/n"] == 6
    assert run.data.tags["sft.examples"] == "48"

    # --resume continues the same MLflow run from the step-2 checkpoint ...
    again = train_sft(load_config(tmp_path / "c.yaml"), resume=True)
    assert again["train/final_loss"] == pytest.approx(results["train/final_loss"], abs=1e-6)
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [2, 4, 4]
    # ... and refuses a checkpoint written with other training settings.
    cfg["optim"] = {"lr": 0.5}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="was written with different training settings"):
        train_sft(load_config(tmp_path / "c.yaml"), resume=True)
