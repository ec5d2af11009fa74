"""The study's configuration: one warm start, one base RL config, the arms, the splits and the evaluation.

    name: countdown
    output_dir: out/study-countdown
    base: configs/train/tiny_cpu.yaml          # every arm starts from this RL config
    overrides: {train.max_steps: 100}          # dotted keys, applied to the base for every arm
    warm_start: {sft: configs/sft/tiny_countdown.yaml}      # or {model: out/sft/model}
    arms:                                      # listed one by one ...
      - {objective: grpo, seeds: [0, 1, 2]}
    grids:                                     # ... or as a product objective x divergence x kappa
      - {group: kappa, objective: [lad], divergence: [js], kappa: [1, 2, 4, 8], seeds: [0, 1]}

Paths (base, warm_start.sft, warm_start.model) are read relative to the working directory, as
every other stage's config is. An arm is identified by its settings (objective and loss_params):
the same arm reached from two entries (LAD-JS kappa 4 in the main comparison and in the kappa
ablation) is trained once per seed, with the union of the seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lad.config import load_yaml_config


class WarmStart(BaseModel):
    """The policy every arm starts from: a given checkpoint, or an SFT run the study does once first."""

    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = Field(None, description="a model reference (a directory, s3:// URI, tiny:1m, ...)")
    sft: Optional[str] = Field(None, description="an SFT config YAML (configs/sft/); trained once into OUTPUT/warm_start")
    sft_overrides: dict[str, Any] = Field({}, description="dotted keys replacing values of the SFT config (e.g. train.max_steps)")

    @model_validator(mode="after")
    def _one(self) -> "WarmStart":
        if (self.model is None) == (self.sft is None):
            raise ValueError("give exactly one of model and sft")
        if self.sft_overrides and self.sft is None:
            raise ValueError("sft_overrides needs sft")
        return self


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(gt=0, description="problems")
    seed: int = Field(description="generator seed")


class Splits(BaseModel):
    """Validation (chooses settings; the curves during training) and test (the final table only).

    Both come from the synthetic generator's held-out buckets, which the training split never
    draws from; the validation problems exclude every test problem.
    """

    model_config = ConfigDict(extra="forbid")

    task: str = Field("countdown", description="synthetic task (lad.data.synthetic)")
    difficulty: int = Field(1, description="generator difficulty, as the training data's")
    validation: Split = Split(n=128, seed=2)
    test: Split = Split(n=256, seed=1)


class StudyEval(BaseModel):
    """How every arm is evaluated: the same for all of them."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(16, ge=8, description="test samples per problem (Pass@1..k); Avg@8 and maj@8 use the first 8")
    validation_k: int = Field(8, gt=0, description="validation samples per problem, at every evaluation during training")
    every_steps: int = Field(20, ge=0, description="validation evaluation every N steps (and before the first, after the last)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of validation and test")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: Optional[int] = Field(None, gt=0, description="None: the base config's rollout.max_new_tokens")
    seed: int = Field(0, description="test sampling seed (the same for every run)")
    engine: str = Field("native", description="rollout engine of the test evaluation (lad.rollout.ENGINES)")


class ArmEntry(BaseModel):
    """One arm, listed explicitly."""

    model_config = ConfigDict(extra="forbid")

    name: Optional[str] = Field(None, description="None: made from the settings (grpo, lad-js-k4)")
    objective: str = Field(description="algorithm.objective (lad, grpo, dr_grpo, dapo)")
    loss_params: dict[str, Any] = Field({}, description="algorithm.loss_params; lad arms start from the base config's")
    seeds: list[int] = Field(min_length=1, description="train.seed of each run")
    group: str = Field("main", description="the table section the arm is reported and chosen in")
    overrides: dict[str, Any] = Field({}, description="dotted keys over the study's overrides for this arm only "
                                      "(e.g. optim.lr); an arm with overrides needs a name")

    @model_validator(mode="after")
    def _named_if_overridden(self) -> "ArmEntry":
        if self.overrides and self.name is None:
            raise ValueError("an arm with overrides needs a name (name: ...)")
        return self


class GridEntry(BaseModel):
    """Arms as a product objective x divergence x kappa (divergence and kappa apply to lad only)."""

    model_config = ConfigDict(extra="forbid")

    group: str = Field(description="the table section of these arms")
    objective: list[str] = Field(["lad"], min_length=1)
    divergence: Optional[list[str]] = Field(None, min_length=1, description="None: the base config's")
    kappa: Optional[list[float]] = Field(None, min_length=1, description="None: the base config's")
    seeds: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _lad_only(self) -> "GridEntry":
        if (self.divergence or self.kappa) and any(o != "lad" for o in self.objective):
            raise ValueError("divergence and kappa apply to objective lad only")
        return self


class Bootstrap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resamples: int = Field(10_000, ge=100, description="paired bootstrap resamples (problems and seeds)")
    seed: int = Field(0)


class StudyConfig(BaseModel):
    """``lad study CONFIG``; every default is documented by its field."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the study's name in the report")
    output_dir: str = Field("out/study", description="warm start, splits, runs/ARM/seedN, table and figures")
    base: str = Field(description="the RL config YAML every arm starts from (configs/train/)")
    overrides: dict[str, Any] = Field({}, description="dotted keys replacing values of the base for every arm")
    warm_start: WarmStart
    splits: Splits = Splits()
    evaluation: StudyEval = StudyEval()
    arms: list[ArmEntry] = []
    grids: list[GridEntry] = []
    reference: str = Field("grpo", description="the arm every other is compared with (paired bootstrap)")
    max_parallel: int = Field(2, gt=0, description="runs trained at once, one process each with OMP_NUM_THREADS=1")
    bootstrap: Bootstrap = Bootstrap()

    @model_validator(mode="after")
    def _some_arm(self) -> "StudyConfig":
        if not self.arms and not self.grids:
            raise ValueError("give at least one arm (arms or grids)")
        return self


def load_study_config(path: str | Path) -> StudyConfig:
    """StudyConfig from YAML; errors (ConfigError) name the file and the field."""
    return load_yaml_config(path, StudyConfig)
