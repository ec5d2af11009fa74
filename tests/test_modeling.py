import json

import pytest
import torch

from lad.environment import packages_digest
from servers import s3, s3_server  # noqa: F401

from lad.modeling import (
    CARD_FILE,
    IM_END,
    build_tiny_model,
    load_model,
    parameter_count,
    read_card,
    save_model,
)


def test_presets_have_their_advertised_size():
    small, _ = build_tiny_model("1m", seed=0)
    big, _ = build_tiny_model("10m", seed=0)
    assert 0.7e6 <= parameter_count(small) <= 1.3e6
    assert 8e6 <= parameter_count(big) <= 12e6
    assert small.config.model_type == "qwen2"


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown tiny model preset '3m'.*'10m', '1m'"):
        build_tiny_model("3m")


def test_seed_fixes_weights_and_leaves_global_rng_alone(tiny):
    model, tok = tiny
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    again, tok2 = build_tiny_model("1m", seed=0)
    assert torch.equal(torch.rand(3), expected_next)
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n
    assert tok.get_vocab() == tok2.get_vocab()
    other, _ = build_tiny_model("1m", seed=1)
    assert not torch.equal(model.model.embed_tokens.weight, other.model.embed_tokens.weight)


def test_tokenizer_round_trips_and_chat_template(tiny):
    _, tok = tiny
    text = "Use 3, 7, 25 to make 46: (25 + 7) * 3 - 50 \\boxed{46}\n```python\ndef f(x):\n    return x\n```"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert len(ids) < len(text)  # merges learned from the task corpus shorten sequences
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    rendered = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert rendered == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == IM_END and tok.convert_tokens_to_ids(IM_END) == tok.eos_token_id
    assert tok.pad_token_id != tok.eos_token_id


def test_save_load_round_trip_keeps_ids_weights_and_card(tiny, tmp_path):
    model, tok = tiny
    card = {"base_model": "tiny:1m", "data": {"tasks": ["countdown"]}, "config": {"lr": 1e-3}, "metrics": {"acc": 0.5}}
    out = tmp_path / "m"
    assert save_model(model, tok, out, card) == str(out)
    loaded, ltok = load_model(out)
    # transformers 5 would load a qwen2 directory with Qwen2Tokenizer and change these ids
    text = "x + 1<|im_end|> \\boxed{12}"
    assert ltok(text)["input_ids"] == tok(text)["input_ids"]
    assert ltok.chat_template == tok.chat_template
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    saved = read_card(out)
    assert {k: v for k, v in saved.items() if k != "environment"} == card
    # what it was trained on: this process's installed set, threads and processor
    env = saved["environment"]
    assert env["packages"]["torch"] == torch.__version__ and env["packages_sha256"] == packages_digest(env["packages"])
    assert (env["torch"]["version"], env["torch"]["cpu_capability"]) == (torch.__version__, torch.backends.cpu.get_cpu_capability())
    readme = (out / "README.md").read_text()
    assert 'base_model: "tiny:1m"' in readme and '"acc": 0.5' in readme
    assert f"Installed packages: sha256 {env['packages_sha256']}" in readme
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dir left behind


def test_save_replaces_an_existing_model(tiny, tmp_path):
    model, tok = tiny
    out = tmp_path / "m"
    save_model(model, tok, out, {"metrics": {"v": 1}})
    save_model(model, tok, out, {"metrics": {"v": 2}})
    card = json.loads((out / CARD_FILE).read_text())
    assert card["metrics"] == {"v": 2} and set(card) == {"metrics", "environment"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_missing_directory_is_a_clear_error_and_never_a_hub_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such directory .*hf://Qwen/Qwen2.5-0.5B"):
        load_model("Qwen/Qwen2.5-0.5B")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_model(tmp_path / "empty")


def test_save_to_and_load_from_s3(tiny, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("LAD_CACHE_DIR", str(tmp_path / "cache"))
    model, tok = tiny
    uri = f"{s3.root}/models/tiny"
    assert save_model(model, tok, uri, {"base_model": "tiny:1m"}) == uri
    loaded, ltok = load_model(uri)
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    assert ltok("\\boxed{7}<|im_end|>")["input_ids"] == tok("\\boxed{7}<|im_end|>")["input_ids"]
