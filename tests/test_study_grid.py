"""Study arms from explicit entries and products, merged by settings; the evaluation sets."""

import json

import pytest

from lad.config import ConfigError
from lad.study.config import StudyConfig
from lad.study.grid import expand, rl_run_config, runs_of

BASE = {"algorithm": {"objective": "lad", "loss_params": {"divergence": "js", "kappa": 4.0, "ratio_level": "token"}}}


def _cfg(**kw):
    return StudyConfig.model_validate({"name": "t", "base": "b.yaml", "warm_start": {"model": "tiny:1m"}, **kw})


def test_arms_and_grids_expand_to_the_product_merged_by_settings():
    cfg = _cfg(arms=[{"objective": "lad", "seeds": [0, 1, 2]}, {"objective": "grpo", "seeds": [0, 1, 2]},
                     {"name": "dapo", "objective": "dapo", "seeds": [0]}],
               grids=[{"group": "divergence", "divergence": ["js", "hd", "tv"], "seeds": [0, 1]},
                      {"group": "kappa", "kappa": [1, 4], "seeds": [0, 3]}])
    arms = expand(cfg, BASE)
    assert [(a.name, a.seeds, a.groups) for a in arms] == [
        ("lad-js-k4", [0, 1, 2, 3], ["main", "divergence", "kappa"]),
        ("grpo", [0, 1, 2], ["main"]),
        ("dapo", [0], ["main"]),
        ("lad-hd-k4", [0, 1], ["divergence"]),
        ("lad-tv-k4", [0, 1], ["divergence"]),
        ("lad-js-k1", [0, 3], ["kappa"]),
    ]
    assert arms[0].loss_params == {"divergence": "js", "kappa": 4.0, "ratio_level": "token"}
    assert arms[5].loss_params == {"divergence": "js", "kappa": 1.0, "ratio_level": "token"}
    assert arms[1].loss_params == {} and arms[1].describe("kappa") is None
    assert len(runs_of(arms)) == 4 + 3 + 1 + 2 + 2 + 2


def test_two_settings_under_one_name_are_refused():
    cfg = _cfg(arms=[{"name": "x", "objective": "grpo", "seeds": [0]}, {"name": "x", "objective": "dapo", "seeds": [0]}],
               reference="x")
    with pytest.raises(ConfigError, match=r"arms\[1\]: arm name 'x' is already used by other settings"):
        expand(cfg, BASE)


def test_an_arm_with_its_own_overrides_is_another_arm_and_changes_only_its_runs(tmp_path):
    import yaml

    from lad.study.runner import prepare_run, test_tokens

    with pytest.raises(ValueError, match="an arm with overrides needs a name"):
        _cfg(arms=[{"objective": "grpo", "seeds": [0], "overrides": {"optim.lr": 1e-4}}])
    cfg = _cfg(arms=[{"objective": "grpo", "seeds": [0, 1]},
                     {"name": "grpo-lr1e-4", "objective": "grpo", "seeds": [0], "group": "lr",
                      "overrides": {"optim.lr": 1e-4, "rollout.max_new_tokens": 8}}],
               overrides={"optim.lr": 4e-4, "train.max_steps": 5})
    base = {**BASE, "rollout": {"max_new_tokens": 24}}
    grpo, low = expand(cfg, base)
    assert (grpo.name, grpo.overrides, low.name, low.overrides, low.groups) == (
        "grpo", {}, "grpo-lr1e-4", {"optim.lr": 1e-4, "rollout.max_new_tokens": 8}, ["lr"])
    assert grpo.key != low.key and grpo.loss_params == low.loss_params == {}
    raws = {}
    for run in runs_of([grpo, low]):
        folder = prepare_run(run, cfg, base, "m", tmp_path / "v.jsonl", tmp_path / "t.jsonl", tmp_path)
        raws[run.name] = yaml.safe_load((folder / "train.yaml").read_text())
        # every arm is tested with the study's budget, not its own
        assert json.loads((folder / "run.json").read_text())["test"]["benchmarks"][0]["max_new_tokens"] == 24
    assert [(r["optim"]["lr"], r["rollout"]["max_new_tokens"], r["train"]["max_steps"]) for r in raws.values()] == [
        (4e-4, 24, 5), (4e-4, 24, 5), (1e-4, 8, 5)]
    assert test_tokens(cfg, base) == 24


def test_a_run_config_keeps_lad_settings_for_lad_only():
    base = {**BASE, "train": {"max_steps": 9}, "tracking": {"enabled": True}}
    lad = rl_run_config(base, model="m", output_dir="o", objective="lad", seed=3, loss_params={"kappa": 2.0},
                        overrides={"train.max_steps": 5})
    assert lad["algorithm"] == {"objective": "lad", "loss_params": {"divergence": "js", "kappa": 2.0, "ratio_level": "token"}}
    assert (lad["model"], lad["output_dir"], lad["train"], lad["tracking"]) == ("m", "o", {"max_steps": 5, "seed": 3}, {"enabled": False})
    grpo = rl_run_config(base, model="m", output_dir="o", objective="grpo", seed=0)
    assert grpo["algorithm"] == {"objective": "grpo", "loss_params": {}}
    assert base["train"] == {"max_steps": 9}  # the base is not modified


def test_the_bases_advantage_belongs_to_its_objective():
    base = {"algorithm": {**BASE["algorithm"], "advantage": "grpo"}}
    lad = rl_run_config(base, model="m", output_dir="o", objective="lad", seed=0)
    dr_grpo = rl_run_config(base, model="m", output_dir="o", objective="dr_grpo", seed=0)
    assert lad["algorithm"]["advantage"] == "grpo"
    assert "advantage" not in dr_grpo["algorithm"]  # None: the objective's own, Dr. GRPO's unnormalised one
    from lad.train.rl import AlgorithmConfig

    assert AlgorithmConfig.model_validate(dr_grpo["algorithm"]).advantage == "dr_grpo"
    named = rl_run_config(base, model="m", output_dir="o", objective="dr_grpo", seed=0, overrides={"algorithm.advantage": "rloo"})
    assert named["algorithm"]["advantage"] == "rloo"
    assert base["algorithm"]["advantage"] == "grpo"  # the base is not modified


def test_validation_and_test_are_disjoint_held_out_sets():
    from lad.data.synthetic import generate
    from lad.study.config import Splits
    from lad.study.splits import draw_splits

    validation, test = draw_splits(Splits.model_validate({"validation": {"n": 300, "seed": 2}, "test": {"n": 300, "seed": 1}}))
    assert (len(validation), len(test)) == (300, 300)
    key = lambda r: json.dumps(r["prompt"])  # noqa: E731
    assert not {key(r) for r in validation} & {key(r) for r in test}
    train = {key(r) for r in generate("countdown", 2000, seed=0, split="train")}
    assert not train & {key(r) for r in validation + test}
    assert test == generate("countdown", 300, seed=1, split="test")


SHIPPED = {  # study config -> runs it trains (arms x seeds, shared arms once)
    "study_countdown.yaml": 36,
    "study_smollm2_arithmetic.yaml": 4,
    "study_smollm2_arithmetic_lr5e-6.yaml": 4,
    "study_smollm2_arithmetic_gpu.yaml": 18,
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_study_config_validates_its_runs_and_its_warm_start(name):
    from pathlib import Path

    from lad.config import apply_overrides, read_yaml_mapping
    from lad.study.config import load_study_config
    from lad.study.runner import check_runs
    from lad.train.sft import SFTConfig

    root = Path(__file__).resolve().parents[1]
    assert sorted(p.name for p in (root / "benchmarks").glob("study_*.yaml") if not p.stem.endswith("_rl")) == sorted(SHIPPED)
    path = root / "benchmarks" / name
    cfg = load_study_config(path)
    base = read_yaml_mapping(root / cfg.base)
    arms = expand(cfg, base, name)
    check_runs(cfg, base, arms, name)
    assert len(runs_of(arms)) == SHIPPED[name]
    assert cfg.reference in [a.name for a in arms]
    if cfg.warm_start.sft is None:  # another shipped study's warm start, by its output folder
        others = [load_study_config(root / "benchmarks" / n) for n in SHIPPED if n != name]
        assert any(cfg.warm_start.model == f"{o.output_dir}/warm_start/model" for o in others if o.warm_start.sft)
    else:
        SFTConfig.model_validate(apply_overrides(read_yaml_mapping(root / cfg.warm_start.sft), cfg.warm_start.sft_overrides))
