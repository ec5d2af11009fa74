"""From the study config to its arms and runs, and from an arm and a seed to one RL config.

An arm is a set of training settings (objective, loss_params, its own config overrides); a run is
an arm at one seed.
``rl_run_config`` is the one place a base RL config becomes a run's: the study and
benchmarks/bench_rl_countdown.py both write their runs' configs through it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lad.config import ConfigError, apply_overrides
from lad.study.config import StudyConfig


@dataclass
class Arm:
    name: str
    objective: str
    loss_params: dict[str, Any]  # as validated by the objective's settings model, only the set ones
    seeds: list[int]
    groups: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted keys over the study's, this arm only

    @property
    def key(self) -> str:
        return json.dumps({"objective": self.objective, "loss_params": self.loss_params, "overrides": self.overrides},
                          sort_keys=True)

    def describe(self, setting: str) -> Optional[Any]:
        """A LAD setting (divergence, kappa) of the arm, None for the other objectives."""
        return self.loss_params.get(setting) if self.objective == "lad" else None


@dataclass(frozen=True)
class Run:
    arm: Arm
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm.name}/seed{self.seed}"


def rl_run_config(base: dict, *, model: str, output_dir: str | Path, objective: str, seed: int,
                  loss_params: Optional[dict] = None, overrides: Optional[dict] = None) -> dict:
    """The raw RL config of one run: ``base`` with ``overrides`` (dotted keys), then the run's own
    model, output folder, objective and seed; tracking off (the runs report through their files).

    A lad run keeps the base's LAD settings under ``loss_params``; any other objective takes its own
    defaults (GRPO: clip 0.2, seq-mean-token-mean) plus ``loss_params``, never LAD's. Likewise the
    base's ``algorithm.advantage`` belongs to the base's objective: a run of another objective takes
    its own estimator (Dr. GRPO's unnormalised one) unless ``overrides`` name one.
    """
    raw = copy.deepcopy(base)
    algorithm = raw.setdefault("algorithm", {})
    base_objective = algorithm.get("objective", "lad")
    if objective != base_objective:
        algorithm.pop("advantage", None)
    raw = apply_overrides(raw, overrides)
    algorithm = raw.setdefault("algorithm", {})
    inherited = dict(algorithm.get("loss_params") or {}) if base_objective == objective == "lad" else {}
    algorithm.update(objective=objective, loss_params={**inherited, **(loss_params or {})})
    raw["model"] = model
    raw["output_dir"] = str(output_dir)
    raw.setdefault("train", {})["seed"] = seed
    raw["tracking"] = {"enabled": False}
    return raw


def _arm_settings(where: str, objective: str, loss_params: dict, base: dict) -> dict:
    """The arm's loss_params as the trainer will hold them (validated by the objective's settings
    model, only the set ones); ConfigError naming ``where`` and the field."""
    from lad.objectives import get_policy_loss

    inherited = (base.get("algorithm") or {}).get("loss_params") or {}
    lad_base = (base.get("algorithm") or {}).get("objective", "lad") == "lad"
    params = {**(inherited if objective == "lad" and lad_base else {}), **loss_params}
    try:
        # the ValueError names the objective and every bad field (unknown objective included)
        return get_policy_loss(objective).settings(**params).model_dump(exclude_unset=True)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def _auto_name(objective: str, params: dict) -> str:
    if objective == "lad":
        return f"lad-{params.get('divergence', 'js')}-k{params.get('kappa', 4.0):g}"
    return objective


def expand(cfg: StudyConfig, base: dict, where: str = "study") -> list[Arm]:
    """The study's arms in config order (explicit arms first, then each grid's product), merged by
    settings: an arm reached twice runs once per seed of either entry. Errors name the entry."""
    entries: list[tuple[str, Optional[str], str, dict, list[int], str, dict]] = []
    for i, a in enumerate(cfg.arms):
        entries.append((f"{where}: arms[{i}]", a.name, a.objective, a.loss_params, a.seeds, a.group, a.overrides))
    for i, g in enumerate(cfg.grids):
        for objective in g.objective:
            for divergence in g.divergence or [None]:
                for kappa in g.kappa or [None]:
                    params = {k: v for k, v in {"divergence": divergence, "kappa": kappa}.items() if v is not None}
                    entries.append((f"{where}: grids[{i}]", None, objective, params, g.seeds, g.group, {}))
    arms: dict[str, Arm] = {}
    by_name: dict[str, str] = {}
    for place, name, objective, params, seeds, group, overrides in entries:
        settings = _arm_settings(place, objective, params, base)
        arm = Arm(name or _auto_name(objective, settings), objective, settings, [], overrides=dict(overrides))
        known = arms.setdefault(arm.key, arm)
        if by_name.setdefault(known.name, known.key) != known.key:
            raise ConfigError(f"{place}: arm name {known.name!r} is already used by other settings; name the arm (name: ...)")
        known.seeds = sorted(set(known.seeds) | set(seeds))
        if group not in known.groups:
            known.groups.append(group)
    if cfg.reference not in by_name:
        raise ConfigError(f"{where}: reference: no arm named {cfg.reference!r}; arms: {sorted(by_name)}")
    return list(arms.values())


def runs_of(arms: list[Arm]) -> list[Run]:
    return [Run(arm, seed) for arm in arms for seed in arm.seeds]
