"""LoRA adapters (``lora:`` of the SFT and RL configs): only the adapters train; the stage writes
the merged model with the adapters beside it, and the merged model computes what the adapted one
does; the RL reference policy is the policy with its adapters off; an RL run with adapters is
killed with SIGKILL and resumed exactly, from checkpoints that hold the adapters and not the base."""

import copy
import json
import signal
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_rl import cfg, samples, small_model

from training_runs import final_weights, max_weight_diff, run, sigkill_at_step

from lad.train.engine import TorchEngine
from lad.train.lora import LoraSettings, add_adapters, is_adapted
from lad.train.rl import policy_update

ADAPTER = {"r": 4, "alpha": 8.0}


def _tiny():
    from lad.modeling import build_tiny_model

    return build_tiny_model("1m", seed=0)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_fresh_adapters_compute_the_base_model_and_only_they_train():
    model, _ = _tiny()
    ids = torch.tensor([[5, 17, 30, 2, 9, 41]])
    want = _logits(model, ids)
    torch.manual_seed(0)
    adapted = add_adapters(copy.deepcopy(model), LoraSettings(**ADAPTER))
    assert is_adapted(adapted) and not is_adapted(model)
    assert torch.equal(_logits(adapted, ids), want)  # B = 0
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    with pytest.raises(ValueError, match=r"r\n  Input should be greater than 0"):
        LoraSettings(r=0)
    with pytest.raises(ValueError, match=r"Extra inputs are not permitted"):
        LoraSettings(rank=4)


def test_the_fused_native_decoder_leaves_an_adapted_model_to_the_generic_one():
    from lad.rollout.native_fused import fused_unsupported

    model, _ = _tiny()
    assert fused_unsupported(model) is None
    assert fused_unsupported(add_adapters(model, LoraSettings(**ADAPTER))) == (
        "LoRA adapters (the fused forward reads the base layers' weights alone)")


def test_vllm_rollouts_are_refused_with_adapters():
    with pytest.raises(ValueError, match=r"lora: the vllm rollout engine loads plain weights, not adapters; use rollout.engine "
                                         r"native or hf"):
        cfg(**{"lora": ADAPTER, "rollout.engine": "vllm"})


# ------------------------------------------------------------------------------ the RL update


def _adapted_small(seed=0):
    """test_rl's small model with adapters whose B is not 0 (so the adapted model differs from its base)."""
    model = small_model(seed).double()
    torch.manual_seed(seed)
    adapted = add_adapters(model, LoraSettings(**ADAPTER))
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if ".lora_B." in name:
                p.normal_(0.0, 0.1)
    return adapted


def _update(c, model, ref=None):
    engine = TorchEngine(model, c.optim, c.engine, total_steps=10, grad_accum=c.mini_batch() // c.train.micro_batch_size)
    return engine.model, policy_update(engine, samples(), c, step=0, pad_id=0, ref_model=ref)


def test_an_rl_update_moves_the_adapters_alone():
    model = _adapted_small()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained, _ = _update(cfg(**{"lora": ADAPTER, "train.micro_batch_size": 4}), model)
    moved = {n for n, p in trained.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(".lora_" in n for n in moved)
    assert {n for n in before if ".lora_" in n} == moved


def test_the_reference_is_the_policy_with_its_adapters_off():
    """kl_coef under LoRA: the reference log-probs come from the policy with its adapters disabled,
    which is the base model: the same update as with a frozen copy of the base."""
    c = cfg(**{"lora": ADAPTER, "algorithm.kl_coef": 0.5, "train.micro_batch_size": 4})
    plain = small_model(0).double()  # the adapted model's base, as a module of its own
    off, m_off = _update(c, _adapted_small())
    copied, m_copied = _update(c, _adapted_small(), ref=plain.eval().requires_grad_(False))
    assert m_off["actor/kl_ref"] > 1e-4  # the adapters moved the policy off its base
    assert m_off["actor/kl_ref"] == pytest.approx(m_copied["actor/kl_ref"], rel=1e-12)
    assert max(float((p - q).detach().abs().max()) for p, q in zip(off.parameters(), copied.parameters())) < 1e-12
    # fresh adapters (B = 0): the policy is its base, at KL 0 (one on-policy mini-batch)
    torch.manual_seed(0)
    _, m_fresh = _update(c, add_adapters(small_model(0).double(), LoraSettings(**ADAPTER)))
    assert m_fresh["actor/kl_ref"] == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------- SFT output


@pytest.fixture(scope="module")
def sft_out(tmp_path_factory):
    from lad.train.sft import SFTConfig, train_sft

    out = tmp_path_factory.mktemp("sft") / "out"
    c = SFTConfig.model_validate({
        "model": "tiny:1m", "output_dir": str(out),
        "data": {"synthetic": {"tasks": ["countdown"], "n_per_task": 32}, "max_seq_len": 256},
        "train": {"micro_batch_size": 8, "max_steps": 4, "log_every": 1}, "optim": {"lr": 1e-2},
        "engine": {"name": "torch"}, "checkpoint": {"every_steps": 2}, "heldout": {"tasks": []},
        "tracking": {"enabled": False}, "lora": ADAPTER,
    })
    train_sft(c)
    return out


def test_sft_writes_the_merged_model_and_the_adapters_beside_it(sft_out):
    base, _ = _tiny()
    merged = load_file(str(sft_out / "model" / "model.safetensors"))
    adapter = load_file(str(sft_out / "adapter" / "adapter_model.safetensors"))
    assert json.loads((sft_out / "adapter" / "adapter_config.json").read_text())["r"] == ADAPTER["r"]
    scale = ADAPTER["alpha"] / ADAPTER["r"]
    targets = {k.split(".lora_A.")[0].removeprefix("base_model.model.") for k in adapter if ".lora_A." in k}
    assert len(targets) == 4 * 7  # every linear layer of the 4 decoder layers
    for name, p in base.state_dict().items():
        owner = name.removesuffix(".weight")
        if owner in targets:  # the base weight plus the trained adapter's B A, nothing else
            a = adapter[f"base_model.model.{owner}.lora_A.weight"]
            b = adapter[f"base_model.model.{owner}.lora_B.weight"]
            assert float(b.abs().max()) > 0
            torch.testing.assert_close(merged[name], p + scale * b @ a, rtol=0, atol=1e-6)
        elif name in merged:  # embeddings, norms, biases: untouched
            assert torch.equal(merged[name], p), name


def test_the_merged_model_computes_what_the_adapted_one_does(sft_out):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, _ = _tiny()
    adapted = PeftModel.from_pretrained(base, str(sft_out / "adapter"))
    merged = AutoModelForCausalLM.from_pretrained(str(sft_out / "model"))
    ids = torch.tensor([[5, 17, 30, 2, 9, 41, 3, 3]])
    got, want = _logits(merged, ids), _logits(adapted, ids)
    assert float((want - _logits(_tiny()[0], ids)).abs().max()) > 1e-3  # the adapters matter
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_a_checkpoint_holds_the_adapters_and_the_optimizer_not_the_base(sft_out):
    state = torch.load(sft_out / "checkpoints" / "step_00000002" / "engine_state.pt", weights_only=True)
    assert state["model"] and all(".lora_" in k for k in state["model"])
    assert len(state["optimizer"]["state"]) == len(state["model"])  # Adam's moments: one entry per adapter tensor


# ------------------------------------------------------------------------- RL, killed and resumed

STEPS, EVERY = 4, 2


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    model, tok = _tiny()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _rl_config(tmp, name, model):
    raw = {
        "model": str(model), "output_dir": str(tmp / name),
        "data": {"train": {"synthetic": {"tasks": ["countdown"], "n_per_task": 32}}},
        "rollout": {"n": 4, "max_new_tokens": 12, "prompts_per_call": 2},
        "train": {"prompts_per_step": 4, "mini_batch_size": 8, "micro_batch_size": 4, "max_steps": STEPS},
        "algorithm": {"objective": "lad", "kl_coef": 0.1},
        "reward": {"answer_pattern": "([0-9])", "format_weight": 0.5},
        "optim": {"lr": 1e-2},
        "engine": {"name": "deepspeed", "zero_stage": 1},
        "eval": {"every_steps": 0, "at_start": False},
        "checkpoint": {"every_steps": EVERY, "keep_last": 2},
        "tracking": {"enabled": False},
        "lora": ADAPTER,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def rl_straight(tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp("rl")
    proc = run([sys.executable, "-m", "lad.cli", "train", str(_rl_config(tmp, "straight", tiny_dir))])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "straight"


def test_an_rl_run_with_adapters_trains_them_and_samples_from_the_adapted_model(rl_straight, tiny_dir):
    steps = [json.loads(line) for line in (rl_straight / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    # the native engine samples the adapted policy (generic decoder): its log-probs are the trainer's
    assert all(s["rollout/logprob_diff_abs_mean"] < 1e-4 for s in steps)
    assert steps[-1]["actor/kl_ref"] > 0
    base = load_file(str(tiny_dir / "model.safetensors"))
    merged = final_weights(rl_straight)
    assert (rl_straight / "adapter" / "adapter_model.safetensors").is_file()
    assert max_weight_diff(base, merged) > 1e-4
    assert torch.equal(merged["model.embed_tokens.weight"], base["model.embed_tokens.weight"])


def test_an_rl_run_with_adapters_resumes_exactly_from_adapter_checkpoints(rl_straight, tiny_dir, tmp_path):
    cfg_path = _rl_config(tmp_path, "killed", tiny_dir)
    proc = run([sys.executable, "-c", sigkill_at_step("rl", cfg_path, EVERY + 1)])
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpt = tmp_path / "killed" / "checkpoints" / f"step_{EVERY:08d}"
    module = torch.load(next(ckpt.rglob("mp_rank_00_model_states.pt")), weights_only=False)["module"]
    # the base is the loaded model's, not saved (DeepSpeed keeps a tied output head, shared with the embeddings)
    assert {k for k in module if ".lora_" not in k} == {"base_model.model.lm_head.weight"} and len(module) == 1 + 2 * 4 * 7
    proc = run([sys.executable, "-m", "lad.cli", "train", str(cfg_path), "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"(step {EVERY} of {STEPS})" in proc.stdout
    assert max_weight_diff(final_weights(rl_straight), final_weights(tmp_path / "killed")) < 1e-6
    straight_adapter = load_file(str(rl_straight / "adapter" / "adapter_model.safetensors"))
    resumed_adapter = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    assert max_weight_diff(straight_adapter, resumed_adapter) < 1e-6
