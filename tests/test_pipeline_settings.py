"""Stage settings from one source: the compiled pipelines' defaults are the typed configs', and a
run's RL stage takes a preset, the run's parameters and overrides of any RLConfig setting, in
that order, validated by RLConfig."""

import copy

import pytest
import yaml

from lad.pipeline.compile import PIPELINES, compile_pipeline
from lad.pipeline.settings import (EVAL_PARAMETERS, GATE_PARAMETERS, RL_PARAMETERS, SFT_PARAMETERS, chosen, is_unset,
                                   typed_defaults)
from lad.pipeline.steps import StepError, rl_config

# component -> (stage, its parameters that set a typed field)
STAGES = {
    "comp-lad-train": ("rl", RL_PARAMETERS), "comp-sft-warmup": ("sft", SFT_PARAMETERS),
    "comp-evaluate": ("eval", EVAL_PARAMETERS), "comp-code-execution": ("eval", EVAL_PARAMETERS),
    "comp-register-model": ("gate", GATE_PARAMETERS),
}
# A switch, not a setting: empty, the branch that trains a baseline with it does not run.
SWITCHES = {"compare_objective"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("compiled")
    return {name: next(yaml.safe_load_all(compile_pipeline(name, out / f"{name}.yaml").read_text())) for name in PIPELINES}


def wired(spec: dict):
    """(component, its parameter, the pipeline parameter feeding it) for every task of the pipeline,
    inside condition branches too."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        for task in dag["tasks"].values():
            for name, source in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in source:
                    yield task["componentRef"]["name"], name, source["componentInputParameter"].removeprefix("pipelinechannel--")


def expected_defaults(spec: dict) -> dict[str, tuple[str, object]]:
    """pipeline parameter -> (the typed field it sets, that field's default), from the pipeline's wiring."""
    out = {}
    for component, name, param in wired(spec):
        if component.rstrip("-0123456789") in STAGES and name in STAGES[component.rstrip("-0123456789")][1]:
            stage, fields = STAGES[component.rstrip("-0123456789")]
            out.setdefault(param, []).append((f"{stage}:{fields[name]}", typed_defaults(stage)[fields[name]]))
    return out


def mismatches(spec: dict) -> dict[str, tuple]:
    """pipeline parameter -> (its default, [(a field it sets, that field's default), ...]) where they differ."""
    params = spec["root"]["inputDefinitions"]["parameters"]
    wrong = {}
    for param, fields in expected_defaults(spec).items():
        if param in SWITCHES:
            continue
        value = params[param].get("defaultValue")
        for field, default in fields:
            # the steps' own rule: 0 stands for a default of None and for eval.k; a negative temperature
            # for the registered one
            if not is_unset(value, default, field.split(":")[1]):
                wrong.setdefault(param, (value, []))[1].append((field, default))
    return {param: (value, sorted(set(fields), key=str)) for param, (value, fields) in wrong.items()}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_compiled_defaults_are_the_typed_configs(compiled, name):
    spec = compiled[name]
    assert {"objective", "lr", "steps", "prompts_per_step", "max_new_tokens", "group_size", "eval_k", "seed",
            "promotion_metric", "promotion_margin", "promotion_min_score"} <= set(expected_defaults(spec))
    assert mismatches(spec) == {}
    # the components carry no defaults of their own for these
    for component, (_, fields) in STAGES.items():
        if component in spec["components"]:
            inputs = spec["components"][component]["inputDefinitions"]["parameters"]
            assert {n for n in fields if n in inputs and "defaultValue" in inputs[n]} == set(), component
    if name == "training":
        params = spec["root"]["inputDefinitions"]["parameters"]
        assert params["sft_data"]["defaultValue"] == "synthetic:" + ",".join(typed_defaults("sft")["data.synthetic.tasks"])


@pytest.mark.parametrize("temperature, expected", [(-1.0, {}), (0.0, {"temperature": 0.0}), (0.6, {"temperature": 0.6})])
def test_eval_temperature_below_0_is_the_registered_one_and_0_is_greedy(temperature, expected):
    parameters = {"k": 1, "limit": 0, "max_new_tokens": 0, "temperature": temperature}
    assert chosen(parameters, EVAL_PARAMETERS, "eval") == {"k": 1, **expected}


def test_a_redeclared_default_is_reported(compiled):
    """The defaults the pipelines used to declare (lr 2e-4, 8 steps, 32 new tokens, eval k 4) against the typed ones."""
    spec = copy.deepcopy(compiled["training"])
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name, value in (("lr", 2e-4), ("steps", 8), ("max_new_tokens", 32), ("eval_k", 4), ("sft_lr", 3e-3)):
        params[name]["defaultValue"] = value
    assert mismatches(spec) == {
        "lr": (2e-4, [("rl:optim.lr", 1e-6)]), "steps": (8, [("rl:train.max_steps", 100)]),
        "max_new_tokens": (32, [("rl:rollout.max_new_tokens", 1024)]), "eval_k": (4, [("eval:k", None), ("rl:eval.k", 8)]),
        "sft_lr": (3e-3, [("sft:optim.lr", 1e-3)]),
    }


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_preset_and_overrides_reach_every_rl_training(compiled, name):
    spec = compiled[name]
    feeds = {(c, n): p for c, n, p in wired(spec) if c.startswith("comp-lad-train")}
    trainings = {c for c, _ in feeds}
    assert trainings == ({"comp-lad-train", "comp-lad-train-2"} if name == "training" else {"comp-lad-train"})
    for component in trainings:
        assert (feeds[(component, "preset")], feeds[(component, "overrides")]) == ("train_preset", "train_overrides")


def config(**settings):
    return rl_config("tiny:1m", "data/train.parquet", "data/eval.parquet", "out", **settings)


def test_without_settings_the_stage_runs_rlconfigs_defaults():
    cfg = config()
    assert (cfg.optim.lr, cfg.train.max_steps, cfg.train.prompts_per_step, cfg.rollout.max_new_tokens) == (1e-6, 100, 32, 1024)
    assert cfg.data.eval is None and cfg.algorithm.objective == "lad" and cfg.algorithm.loss_settings().kappa == 4.0
    # what the step decides: nothing kept but the model, a log point per 1% of the steps
    assert (cfg.train.samples_every, cfg.train.log_every, cfg.checkpoint.every_steps) == (0, 1, 100)


def test_a_preset_is_the_base_and_set_parameters_go_over_it():
    cfg = config(preset="tiny_cpu", lr=1e-6, steps=7, mini_batch_size=0, eval_k=0, eval_prompts=16)
    # tiny_cpu's values where the parameters stand at their defaults (lr 1e-6, mini_batch_size 0, eval_k 0) ...
    assert (cfg.optim.lr, cfg.train.mini_batch_size, cfg.eval.k, cfg.rollout.engine) == (2e-4, 64, 8, "native")
    assert cfg.rollout.options == {"max_batch_size": 128} and cfg.engine.precision == "fp32"
    # ... the set ones over it, and the step's own data, model and scratch settings over everything
    assert cfg.train.max_steps == 7 and cfg.checkpoint.every_steps == 7
    assert (cfg.model, cfg.output_dir, cfg.data.train.path, cfg.data.train.synthetic) == ("tiny:1m", "out", "data/train.parquet", None)
    assert (cfg.data.eval.path, cfg.data.eval.limit, cfg.data.max_prompt_len) == ("data/eval.parquet", 16, 256)
    assert cfg.train.samples_every == 0 and cfg.tracking.experiment == "lad-pipeline"


def test_overrides_reach_any_rl_setting_over_preset_and_parameters(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("algorithm: {objective: lad, loss_params: {divergence: hd}}\noptim: {lr: 3.0e-5}\n")
    cfg = config(preset=str(preset), kappa=2.0, lr=5e-5, overrides={
        "algorithm.objective": "grpo", "algorithm.advantage": "rloo", "algorithm.kl_coef": 0.05, "algorithm.update_epochs": 2,
        "algorithm.loss_params": {"clip_low": 0.1, "clip_high": 0.28}, "rollout.temperature": 0.9, "optim.lr": 4e-5,
    })
    a = cfg.algorithm
    assert (a.objective, a.advantage, a.kl_coef, a.update_epochs) == ("grpo", "rloo", 0.05, 2)
    # LAD's parameters (kappa) do not reach a baseline; the overrides' loss_params replace the preset's
    assert a.loss_params == {"clip_low": 0.1, "clip_high": 0.28} and a.loss_settings().clip_high == 0.28
    assert (cfg.rollout.temperature, cfg.optim.lr) == (0.9, 4e-5)


def test_a_baseline_ignores_lads_parameters_and_lad_takes_them():
    assert config(objective="grpo", divergence="hd", kappa=2.0).algorithm.loss_params == {}
    assert config(divergence="hd", kappa=2.0).algorithm.loss_params == {"divergence": "hd", "kappa": 2.0}


def test_a_baseline_from_a_lad_preset_takes_its_own_loss_settings_and_advantage():
    # tiny_cpu is written for LAD: its divergence would be refused by GRPO's settings, and its
    # advantage: grpo (std-normalised) would make a Dr. GRPO baseline half of Dr. GRPO
    lad, grpo, dr_grpo = (config(preset="tiny_cpu", objective=o).algorithm for o in ("lad", "grpo", "dr_grpo"))
    assert (lad.advantage, lad.loss_params["divergence"], lad.loss_params["loss_agg_mode"]) == ("grpo", "js", "token-mean")
    assert (grpo.advantage, grpo.loss_params, grpo.loss_settings().loss_agg_mode) == ("grpo", {}, "seq-mean-token-mean")
    assert (dr_grpo.advantage, dr_grpo.loss_settings().loss_agg_mode) == ("dr_grpo", "seq-mean-token-sum-norm")
    # a baseline's advantage named by the overrides still applies
    assert config(preset="tiny_cpu", objective="dr_grpo", overrides={"algorithm.advantage": "grpo"}).algorithm.advantage == "grpo"


@pytest.mark.parametrize("settings,message", [
    ({"overrides": {"algorithm.kl_coeff": 0.1}}, "RL settings: 'algorithm.kl_coeff' is not a setting of RLConfig: algorithm has ["),
    ({"overrides": {"optim.lr": -1.0}}, "RL settings: optim.lr: Input should be greater than 0"),
    ({"overrides": {"algorithm.loss_params": {"kapa": 2}}}, "RL settings: algorithm"),
    ({"preset": "no_such"}, "RL settings: preset 'no_such': no configs/train/no_such.yaml; presets: paper_code, paper_math, qwen2.5-0.5b-instruct, qwen2.5-1.5b-instruct, smollm2-135m-cpu, tiny_cpu"),
    ({"temperature": 0.5}, "RL settings: rl settings: unknown parameter(s) ['temperature']; expected some of"),
])
def test_bad_settings_name_what_is_wrong(settings, message):
    with pytest.raises(StepError) as err:
        config(**settings)
    assert str(err.value).startswith(message), str(err.value)
