"""A pipeline step's stage settings from one source: the stage's typed config.

A step builds its stage's config in layers, each over the one before:

    the typed config's defaults (RLConfig, SFTConfig, the benchmark registry under EvalConfig, GateConfig)
    <- the preset: a YAML file in the stage's format: a name of configs/train/*.yaml, a path or an s3:// URI
    <- the run's parameters (lr, steps, ...) whose value is not their field's default
    <- the overrides: any setting by its dotted name (algorithm.kl_coef, algorithm.loss_params.clip_high)
    <- what the step decides itself: the model, the data, the output folder, the MLflow run

A run parameter's default is its field's default, or 0 where the field defaults to None or to
the benchmark's registered value (0 is never a valid value there); ``tests/test_pipeline_settings``
compares the compiled pipelines with the typed configs. So a parameter left at its default never
hides the preset's value; to set a field back to its default under a preset, use the overrides.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping, get_args

import yaml
from pydantic import BaseModel

# Run parameters of the RL stage -> the RLConfig field each sets. LAD's own (divergence, kappa)
# apply to the lad objective only: a baseline trained beside it in the same run ignores them.
RL_PARAMETERS = {
    "objective": "algorithm.objective", "divergence": "algorithm.loss_params.divergence",
    "kappa": "algorithm.loss_params.kappa", "group_size": "rollout.n", "max_new_tokens": "rollout.max_new_tokens",
    "rollout_engine": "rollout.engine", "lr": "optim.lr", "min_lr_ratio": "optim.min_lr_ratio", "steps": "train.max_steps",
    "mask_truncated": "algorithm.mask_truncated",
    "prompts_per_step": "train.prompts_per_step", "mini_batch_size": "train.mini_batch_size",
    "micro_batch_size": "train.micro_batch_size", "engine": "engine.name", "eval_k": "eval.k", "seed": "train.seed",
    "reward_functions": "reward.functions", "checkpoint_every": "checkpoint.every_steps",
}
LAD_ONLY = {"divergence", "kappa"}
# Run parameters of the SFT stage -> SFTConfig fields (steps and data are the step's own: 0 steps
# skips the warm-up, data names the demonstrations).
SFT_PARAMETERS = {
    "lr": "optim.lr", "micro_batch_size": "train.micro_batch_size", "heldout_problems": "heldout.n_per_task",
    "engine": "engine.name", "seed": "train.seed",
}
# Run parameters of the evaluation -> the fields of each benchmark entry (None: the registry's).
EVAL_PARAMETERS = {"k": "k", "limit": "limit", "max_new_tokens": "max_new_tokens", "temperature": "temperature"}
# Run parameters of the registration step -> the promotion gate's settings (GateConfig).
GATE_PARAMETERS = {"metric": "metric", "margin": "margin", "min_score": "min_score"}
# Fields whose run parameter is shared with the evaluation, where 0 means the benchmark's value:
# 0 means the field's default here too.
ZERO_IS_DEFAULT = {"eval.k"}
# Evaluation fields where 0 is a setting of its own (temperature 0 decodes greedily), so a negative
# run parameter stands for the default instead.
NEGATIVE_IS_DEFAULT = {"temperature"}
PRESETS_DIR = "configs/train"


class SettingsError(ValueError):
    """A preset, parameter or override the stage's typed config cannot take; the message names it."""


@functools.cache
def typed_defaults(stage: str) -> dict[str, Any]:
    """The defaults of a stage's typed config as ``{dotted field: value}``: ``rl`` (RLConfig, with
    LAD's loss settings), ``sft`` (SFTConfig) or ``eval`` (a benchmark entry of EvalConfig)."""
    if stage == "rl":
        from lad.train.rl import AlgorithmConfig, RLConfig

        doc = RLConfig(data={"train": {"path": "train.parquet"}}).model_dump()
        doc["algorithm"]["loss_params"] = AlgorithmConfig().loss_settings().model_dump()
    elif stage == "sft":
        from lad.train.sft import SFTConfig

        doc = SFTConfig(data={"synthetic": {}}).model_dump()
    elif stage == "eval":
        from lad.evaluation.config import BenchmarkOverrides

        doc = BenchmarkOverrides(name="benchmark").model_dump()
    elif stage == "gate":
        from lad.tracking.registry import GateConfig

        doc = GateConfig().model_dump()
    else:
        raise ValueError(f"unknown stage {stage!r}; expected rl, sft, eval or gate")
    return flatten(doc)


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{dotted path: leaf}`` (an empty mapping is a leaf)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def is_unset(value: Any, default: Any, field: str = "") -> bool:
    """A run parameter at its field's default, or 0 standing for a default of None (or for the
    default of a field in ZERO_IS_DEFAULT); for a field in NEGATIVE_IS_DEFAULT, a negative value
    stands for the default and 0 is a value."""
    if field in NEGATIVE_IS_DEFAULT:
        return value is None or value < 0 or value == default
    zero = value == 0 and not isinstance(value, bool) and (default is None or field in ZERO_IS_DEFAULT)
    return value is None or value == default or zero


def chosen(parameters: Mapping[str, Any], fields: Mapping[str, str], stage: str) -> dict[str, Any]:
    """``{dotted field: value}`` of the parameters that are set (see :func:`is_unset`)."""
    defaults = typed_defaults(stage)
    unknown = sorted(set(parameters) - set(fields))
    if unknown:
        raise SettingsError(f"{stage} settings: unknown parameter(s) {unknown}; expected some of {sorted(fields)}")
    return {fields[k]: v for k, v in parameters.items() if not is_unset(v, defaults[fields[k]], fields[k])}


def check_field(model: type[BaseModel], path: str) -> None:
    """SettingsError unless ``path`` names a field of ``model`` (entries of dict-valued fields,
    e.g. algorithm.loss_params.kappa, are checked by the field's own validation)."""
    node: Any = model
    for i, part in enumerate(path.split(".")):
        fields = getattr(node, "model_fields", None)
        if fields is None:
            return  # inside a dict-valued field
        if part not in fields:
            where = ".".join(path.split(".")[:i]) or "the top level"
            raise SettingsError(f"{path!r} is not a setting of {model.__name__}: {where} has {sorted(fields)}")
        annotation = fields[part].annotation
        node = next((a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)), dict)


def presets_dir() -> Path:
    """configs/train: installed with lad as package data (lad/configs), beside lad/ in a checkout."""
    package = Path(__file__).resolve().parents[1]
    return (package if (package / "configs").is_dir() else package.parent) / PRESETS_DIR


def read_preset(ref: str) -> dict:
    """The settings of a preset: a name of ``configs/train/<name>.yaml``, or a local path or an
    s3:// URI of a YAML file in the stage's format."""
    from lad.storage import read_bytes

    if "/" not in ref and not ref.endswith((".yaml", ".yml")):
        folder = presets_dir()
        if not (folder / f"{ref}.yaml").is_file():
            names = sorted(p.stem for p in folder.glob("*.yaml"))
            raise SettingsError(f"preset {ref!r}: no {PRESETS_DIR}/{ref}.yaml; presets: {', '.join(names) or 'none'}")
        ref = str(folder / f"{ref}.yaml")
    try:
        doc = yaml.safe_load(read_bytes(ref))
    except (OSError, ValueError) as err:
        raise SettingsError(f"preset {ref}: cannot read it: {err}") from None
    if not isinstance(doc, dict):
        raise SettingsError(f"preset {ref}: expected a mapping of settings at the top level")
    return doc


def layered(*layers: Mapping[str, Any]) -> dict:
    """Dotted ``{field: value}`` layers, later ones winning, as one nested mapping (a value of
    None sets the field to None)."""
    raw: dict = {}
    for layer in layers:
        for key, value in layer.items():
            *parents, leaf = key.split(".")
            node = raw
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return raw
