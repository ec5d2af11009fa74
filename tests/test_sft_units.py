"""SFT building blocks: data pairs and labels, batch plan, loss, schedule, torch engine, checkpoints, config."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from lad.cli import app
from lad.modeling import build_tiny_model
from lad.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, resume_latest, save_checkpoint
from lad.train.engine import EngineConfig, OptimConfig, TorchEngine, lr_multiplier
from lad.train.sft import load_config
from lad.train.sft_data import (
    IGNORE,
    DataError,
    Example,
    Pair,
    SFTData,
    batch_plan,
    collate,
    completion_nll_sum,
    load_pairs,
    micro_slice,
    pair_from_record,
    tokenize_pairs,
)

MSG = [{"role": "user", "content": "2 + 3?"}]


# ---------------------------------------------------------------- pairs and records


def test_response_comes_from_field_then_assistant_turn_then_synthetic_demonstration():
    assert pair_from_record({"prompt": MSG, "response": "5"}, "f, row 1") == Pair(MSG, "5")
    assert pair_from_record({"prompt": MSG + [{"role": "assistant", "content": "\\boxed{5}"}]}, "w") == Pair(MSG, "\\boxed{5}")
    from lad.data.synthetic import demonstration, generate

    rec = generate("countdown", 1, seed=0)[0]
    assert pair_from_record(rec, "w").response == demonstration(rec)


@pytest.mark.parametrize(
    "record, message",
    [
        ({"prompt": "hi", "response": "x"}, "data.jsonl, line 3: field 'prompt' must be a non-empty list"),
        ({"prompt": [{"role": "user"}], "response": "x"}, r"data.jsonl, line 3: prompt\[0\] must be a message"),
        ({"prompt": MSG}, "data.jsonl, line 3: no response to train on"),
        ({"prompt": [{"role": "assistant", "content": "a"}]}, "data.jsonl, line 3: 'prompt' has no messages before"),
    ],
)
def test_bad_records_name_file_row_and_field(record, message):
    with pytest.raises(DataError, match=message):
        pair_from_record(record, "data.jsonl, line 3")


def test_jsonl_and_parquet_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": MSG, "response": "5"}, {"prompt": MSG, "response": "6"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):
        assert [p.response for p in load_pairs(SFTData(path=str(tmp_path / name)))] == ["5", "6"]
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: invalid JSON"):
        load_pairs(SFTData(path=str(tmp_path / "bad.jsonl")))
    with pytest.raises(DataError, match=r"d.csv: unsupported SFT data file type '.csv'"):
        load_pairs(SFTData(path=str(tmp_path / "d.csv")))


def test_canonical_synthetic_parquet_trains_on_the_demonstrations(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lad.data.synthetic import demonstration, generate

    records = [r for t in ("countdown", "arithmetic", "code") for r in generate(t, 3, seed=0)]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "train.parquet")  # extra_info keys unified, others null
    pairs = load_pairs(SFTData(path=str(tmp_path / "train.parquet")))
    assert [p.response for p in pairs] == [demonstration(r) for r in records]
    assert [p.messages for p in pairs] == [r["prompt"] for r in records]


def test_exactly_one_data_source():
    with pytest.raises(ValueError, match="exactly one of data.path and data.synthetic"):
        SFTData()


# ---------------------------------------------------------------- tokenization, batches, loss


def test_labels_cover_exactly_the_completion_and_its_eos(tiny):
    _, tok = tiny
    (ex,), dropped = tokenize_pairs([Pair(MSG, "\\boxed{5}")], tok, 512)
    assert dropped == 0
    prompt = tok(tok.apply_chat_template(MSG, add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"]
    assert ex.input_ids[: ex.n_prompt] == prompt
    assert tok.decode(ex.input_ids[ex.n_prompt :]) == "\\boxed{5}<|im_end|>"
    batch = collate([ex, Example([7, 8, 9], 1)], tok.pad_token_id)
    assert batch["labels"][0].tolist() == [IGNORE] * ex.n_prompt + ex.input_ids[ex.n_prompt :]
    assert batch["labels"][1].tolist() == [IGNORE, 8, 9] + [IGNORE] * (len(ex.input_ids) - 3)
    assert batch["attention_mask"][1].tolist() == [1, 1, 1] + [0] * (len(ex.input_ids) - 3)
    _, dropped = tokenize_pairs([Pair(MSG, "\\boxed{5}")], tok, len(ex.input_ids) - 1)
    assert dropped == 1


def test_batch_plan_is_a_deterministic_length_grouped_partition():
    lengths = [(i * 37) % 101 for i in range(1000)]
    plan = batch_plan(lengths, 8, seed=3, epoch=0)
    assert plan == batch_plan(lengths, 8, seed=3, epoch=0)
    assert plan != batch_plan(lengths, 8, seed=3, epoch=1)
    assert len(plan) == 125 and all(len(b) == 8 for b in plan)
    assert sorted(i for b in plan for i in b) == list(range(1000))
    padded = sum(8 * max(lengths[i] for i in b) for b in plan)
    random_batches = [list(range(k, k + 8)) for k in range(0, 1000, 8)]
    assert padded < 0.7 * sum(8 * max(lengths[i] for i in b) for b in random_batches)
    assert len(batch_plan(list(range(30)), 8, seed=0, epoch=0)) == 3  # the incomplete batch is dropped


def test_micro_slices_partition_the_global_batch():
    batch = list(range(16))
    parts = [micro_slice(batch, micro=m, rank=r, world_size=2, micro_batch_size=4) for m in range(2) for r in range(2)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]


def test_completion_nll_sum_counts_only_labelled_positions():
    logits = torch.randn(1, 4, 5)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 1]])
    logp = torch.log_softmax(logits, -1)
    expected = -(logp[0, 1, 3] + logp[0, 2, 1])
    assert completion_nll_sum(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    f = lambda s: lr_multiplier(s, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)  # noqa: E731
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(14) == pytest.approx(0.1) and f(20) == pytest.approx(0.1)


# ---------------------------------------------------------------- engine and checkpoints


def _global_batch(tok):
    pairs = load_pairs(SFTData(synthetic={"tasks": ["arithmetic"], "n_per_task": 8}))
    examples, _ = tokenize_pairs(pairs, tok, 512)
    return examples


def _train(engine, examples, tok, steps, micro):
    n_tokens = sum(e.n_completion for e in examples)
    for _ in range(steps):
        for k in range(0, len(examples), micro):
            mb = collate(examples[k : k + micro], tok.pad_token_id)
            labels = mb.pop("labels")
            engine.backward(completion_nll_sum(engine.forward(**mb).logits, labels) / n_tokens)
            engine.step()


def test_accumulated_micro_batch_shares_add_up_to_the_full_batch_gradient(tiny):
    _, tok = tiny
    examples = _global_batch(tok)
    grads = []
    for micro in (8, 2):  # one micro-batch of 8, or four of 2 (differently padded)
        engine = TorchEngine(build_tiny_model("1m", seed=0)[0], OptimConfig(), EngineConfig(name="torch"), total_steps=3, grad_accum=8 // micro)
        n_tokens = sum(e.n_completion for e in examples)
        for k in range(0, 8, micro):
            mb = collate(examples[k : k + micro], tok.pad_token_id)
            labels = mb.pop("labels")
            engine.backward(completion_nll_sum(engine.forward(**mb).logits, labels) / n_tokens)
        grads.append([p.grad.clone() for p in engine.model.parameters()])
    scale = max(g.abs().max().item() for g in grads[0])
    assert scale > 1e-3
    assert max((a - b).abs().max().item() for a, b in zip(*grads)) < 1e-6 * scale * 10


def test_checkpoint_restores_exactly_keeps_last_k_and_ignores_partial_writes(tiny, tmp_path):
    _, tok = tiny
    examples = _global_batch(tok)
    optim = OptimConfig(lr=1e-2, warmup_steps=1)
    make = lambda: TorchEngine(build_tiny_model("1m", seed=0)[0], optim, EngineConfig(name="torch"), total_steps=6, grad_accum=2)  # noqa: E731
    a = make()
    for step in (1, 2, 3):
        _train(a, examples, tok, 1, micro=4)
        torch.manual_seed(99)
        save_checkpoint(a, tmp_path, step, {"tokens_seen": step}, keep_last=2)
    expected_noise = torch.rand(4)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    (tmp_path / ".step_00000004.tmp").mkdir()  # a save killed half-way
    (tmp_path / "step_00000009").mkdir()  # a folder without trainer_state.json is not a checkpoint
    assert latest_checkpoint(tmp_path).name == "step_00000003"
    b = make()
    torch.manual_seed(5)
    state = load_checkpoint(b, tmp_path / "step_00000003")
    assert state == {"tokens_seen": 3, "step": 3}
    assert torch.equal(torch.rand(4), expected_noise)  # RNG restored to its state at save time
    for x, y in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(x, y)
    _train(a, examples, tok, 2, micro=4)
    _train(b, examples, tok, 2, micro=4)
    assert max((x - y).abs().max().item() for x, y in zip(a.model.parameters(), b.model.parameters())) == 0.0
    assert a.lr() == b.lr()


def test_load_rejects_an_incomplete_checkpoint(tiny, tmp_path):
    engine = TorchEngine(build_tiny_model("1m", seed=0)[0], OptimConfig(), EngineConfig(name="torch"), total_steps=2, grad_accum=1)
    (tmp_path / "step_00000001").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a complete checkpoint"):
        load_checkpoint(engine, tmp_path / "step_00000001")


def test_resume_latest_starts_fresh_restores_the_newest_and_refuses_other_settings(tiny, tmp_path, capsys):
    make = lambda: TorchEngine(build_tiny_model("1m", seed=0)[0], OptimConfig(), EngineConfig(name="torch"), total_steps=4, grad_accum=1)  # noqa: E731
    trajectory = {"lr": 1e-3, "data": ("a", "b")}  # a tuple, as a config dump may hold: compared as saved (JSON)
    engine = make()
    assert resume_latest(engine, tmp_path, trajectory, total_steps=4) is None
    for step in (1, 2):
        save_checkpoint(engine, tmp_path, step, {"trajectory": trajectory, "tokens_seen": 10 * step}, keep_last=2)
    state = resume_latest(make(), tmp_path, trajectory, total_steps=4)
    assert state == {"trajectory": {"lr": 1e-3, "data": ["a", "b"]}, "tokens_seen": 20, "step": 2}
    assert f"resuming from {tmp_path / 'step_00000002'} (step 2 of 4)" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"checkpoint .*step_00000002 was written with different training settings"):
        resume_latest(make(), tmp_path, {**trajectory, "lr": 2e-3}, total_steps=4)


# ---------------------------------------------------------------- config and CLI


def test_config_errors_name_file_and_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {synthetic: {tasks: [countdown]}}\ntrain: {micro_batch_size: 0}\nengine: {name: torch, zero_stage: 2}\n")
    with pytest.raises(ValueError) as err:
        load_config(p)
    text = str(err.value)
    assert text.startswith(f"{p}: train.micro_batch_size: Input should be greater than 0; ")
    assert "zero_stage needs engine name 'deepspeed'" in text
    p.write_text("model: tiny:3m\ndata: {synthetic: {}}\n")
    with pytest.raises(ValueError, match=r"model 'tiny:3m': unknown tiny preset"):
        load_config(p)


def test_cli_reports_bad_config_without_traceback(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {path: missing.jsonl}\nbogus: 1\n")
    result = CliRunner().invoke(app, ["sft", str(p)])
    assert result.exit_code == 2
    assert "bogus: Extra inputs are not permitted" in result.output
    assert "Traceback" not in result.output
