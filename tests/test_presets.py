"""The presets for real models (configs/train/): each loads through its typed config (directly and
as a pipeline preset), names the data prep config that writes its training and held-out files
(the paper's hub sets with a bundled fallback), and states the memory estimate the formula
gives for it."""

import re
from pathlib import Path

import pytest

from lad.data.config import load_config as load_prep_config
from lad.data.public import manifest
from lad.pipeline.steps import rl_config
from lad.train.memory_estimate import preset_peak_bytes
from lad.train.rl import load_config

ROOT = Path(__file__).resolve().parents[1]
# preset -> (model, data prep config, GPUs of the estimate, ZeRO stage (None: CPU), rollout engine)
PRESETS = {
    "qwen2.5-0.5b-instruct": ("hf://Qwen/Qwen2.5-0.5B-Instruct", "dapo_math", 1, 2, "vllm"),
    "qwen2.5-1.5b-instruct": ("hf://Qwen/Qwen2.5-1.5B-Instruct", "dapo_math", 8, 2, "vllm"),
    "paper_math": ("hf://Qwen/Qwen2.5-7B", "dapo_math", 8, 3, "vllm"),
    "paper_code": ("hf://deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepcoder", 8, 3, "vllm"),
    "smollm2-135m-cpu": ("smollm2-135m-instruct", "math_cpu", 1, None, "native"),
}
ESTIMATE = re.compile(r"^# Memory estimate \(lad/train/memory_estimate\.py, [^)]+\): ([0-9.]+) GiB (?:per GPU on (\d+) GPUs?|for the training process)$", re.M)
DATA = re.compile(r"^# Data: lad data prep (configs/data/\S+\.yaml) --output (\S+)$", re.M)


def test_every_shipped_preset_loads_as_a_file_and_as_a_pipeline_preset():
    names = sorted(p.stem for p in (ROOT / "configs" / "train").glob("*.yaml"))
    assert set(PRESETS) | {"tiny_cpu"} == set(names)
    for name in names:
        cfg = load_config(ROOT / "configs" / "train" / f"{name}.yaml")
        assert cfg.optimizer_steps() >= 1
        # the pipeline reads it by name under its own settings (model, data, output)
        step = rl_config("init", "data/train.parquet", None, "out", preset=name)
        assert (step.rollout, step.memory, step.engine, step.optim) == (cfg.rollout, cfg.memory, cfg.engine, cfg.optim)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_names_its_data_and_states_its_memory(name):
    model, data, gpus, stage, engine = PRESETS[name]
    path = ROOT / "configs" / "train" / f"{name}.yaml"
    text, cfg = path.read_text(), load_config(path)
    assert (cfg.model, cfg.rollout.engine) == (model, engine)
    if stage is None:  # the CPU preset: one float32 process
        assert (cfg.engine.name, cfg.engine.precision, cfg.memory.gradient_checkpointing) == ("torch", "fp32", False)
    else:
        assert (cfg.engine.name, cfg.engine.zero_stage, cfg.engine.precision) == ("deepspeed", stage, "bf16")
        assert cfg.memory.gradient_checkpointing and cfg.memory.logprob_chunk_size == 512

    # the data prep config that writes its files
    (config_path, output), = DATA.findall(text)
    assert config_path == f"configs/data/{data}.yaml"
    prep = load_prep_config(ROOT / config_path)
    assert prep.output == output
    assert cfg.data.train.path == f"{output}/train.parquet"
    evals = {s.name for s in prep.sources if s.role == "eval"}
    assert prep.eval_layout == "per_source"
    paths = [cfg.data.eval.path] if isinstance(cfg.data.eval.path, str) else cfg.data.eval.path
    for p in paths:
        assert p.startswith(f"{output}/eval/") and p.removeprefix(f"{output}/eval/").removesuffix(".parquet") in evals, p

    # the stated estimate is the formula's for this preset
    (gib, stated_gpus), = ESTIMATE.findall(text)
    assert int(stated_gpus or 1) == gpus
    assert float(gib) == round(preset_peak_bytes(cfg, gpus) / 2**30, 1)


@pytest.mark.parametrize("name, hub", [
    ("dapo_math", ["hf://datasets/BytedTsinghua-SIA/DAPO-Math-17k:train"]),
    ("deepcoder", [f"hf://datasets/agentica-org/DeepCoder-Preview-Dataset/{c}:train" for c in ("primeintellect", "taco", "lcbv5")]),
])
def test_the_paper_training_sets_come_from_the_hub_with_a_bundled_fallback(name, hub):
    prep = load_prep_config(ROOT / "configs" / "data" / f"{name}.yaml")
    train = [s for s in prep.sources if s.role == "train"]
    assert [s.uri for s in train] == hub
    bundled = manifest()
    for s in train:
        assert s.fallback is not None and s.fallback.uri.startswith("lad://")
        assert s.fallback.uri.removeprefix("lad://") in bundled  # shipped with the package
        assert s.on_bad_row == "skip"
    # the held-out sets are bundled files
    assert all(s.uri.removeprefix("lad://") in bundled for s in prep.sources if s.role == "eval")
