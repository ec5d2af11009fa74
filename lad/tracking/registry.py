"""The model registry: versions of a registered model tagged with what produced them and how they
scored, the alias ``champion`` for the model in service and ``challenger`` for the latest
candidate, and the promotion gate that moves ``champion`` only when the challenger beats it by a
margin on the same benchmarks (the reason is written on the version either way)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from pydantic import BaseModel, Field

from lad.tracking.runs import (
    METRIC_TAG_PREFIX, TAG_BASE_MODEL, TAG_BENCHMARKS, TAG_CODE_VERSION, TAG_CONFIG_HASH, TAG_DATA_HASH, Runs, TrackingError,
    code_version, metric_key, quote,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_DECISION = "promotion.decision"
TAG_REASON = "promotion.reason"
TAG_REGISTRATION_KEY = "registration_key"
_SCORE_TOLERANCE = 1e-9  # so 0.55 - 0.50 counts as a 0.05 improvement despite binary rounding


class GateConfig(BaseModel):
    """The promotion gate's settings; the pipelines' promotion_* parameters and ``lad models
    promote`` take their defaults from here."""

    metric: str = Field("all/avg@k", min_length=1, description="the metric compared, e.g. all/avg@k, math500/pass@k")
    margin: float = Field(0.0, ge=0, description="how much the challenger must beat the champion by; a tie never "
                          "promotes, so 0 means strictly better")
    min_score: float = Field(0.01, ge=0, description="the floor: a version whose metric is below it is registered but "
                             "never promoted, champion or not (with --lower-is-better: the highest acceptable value)")


GATE = GateConfig()


@dataclass(frozen=True)
class VersionScore:
    """What the promotion gate reads from a registered model version."""

    version: str
    metrics: dict[str, float]
    benchmarks: str


def version_score(mv) -> VersionScore:
    metrics = {}
    for key, value in mv.tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                metrics[key[len(METRIC_TAG_PREFIX) :]] = float(value)
            except ValueError:
                raise TrackingError(f"model version {mv.name} v{mv.version}: tag {key}={value!r} is not a number") from None
    return VersionScore(str(mv.version), metrics, mv.tags.get(TAG_BENCHMARKS, ""))


def decide_promotion(
    candidate: VersionScore, champion: VersionScore | None, metric: str, margin: float, higher_is_better: bool = True,
    *, min_score: float | None = None,
) -> tuple[bool, str]:
    """(promote?, reason). The candidate must reach ``min_score`` on ``metric`` (the floor, with
    or without a champion) and beat the champion, measured on the same benchmarks, by at least
    ``margin`` and by more than a tie: with a margin of 0 an equal score keeps the champion,
    since swapping models that score the same buys nothing and loses the one in service.

    ``min_score`` None: GateConfig's floor for a higher-is-better metric, no bound for a
    lower-is-better one (a loss has no natural ceiling); a lower-is-better metric's bound is the
    highest acceptable value."""
    if min_score is None:
        min_score = GATE.min_score if higher_is_better else float("inf")
    metric = metric_key(metric)
    if metric not in candidate.metrics:
        return False, f"refused: v{candidate.version} has no metric {metric!r} (has {sorted(candidate.metrics)})"
    value = candidate.metrics[metric]
    below = value < min_score - _SCORE_TOLERANCE if higher_is_better else value > min_score + _SCORE_TOLERANCE
    if below:
        bound = "below the floor" if higher_is_better else "above the ceiling"
        return False, f"refused: v{candidate.version} {metric}={value:.6g} is {bound} min_score {min_score:g}"
    if champion is None:
        return True, f"promoted: no champion yet; v{candidate.version} {metric}={value:.6g}"
    if champion.version == candidate.version:
        return False, f"refused: v{candidate.version} is already the champion"
    if metric not in champion.metrics:
        return False, f"refused: champion v{champion.version} has no metric {metric!r} to compare with"
    if candidate.benchmarks != champion.benchmarks:
        return False, (
            f"refused: benchmarks differ (v{candidate.version}: {candidate.benchmarks or 'none'}; "
            f"champion v{champion.version}: {champion.benchmarks or 'none'})"
        )
    best = champion.metrics[metric]
    gain = value - best if higher_is_better else best - value
    direction = "higher" if higher_is_better else "lower"
    detail = (
        f"{metric} {value:.6g} vs champion v{champion.version} {best:.6g}: "
        f"gain {gain:.6g} ({direction} is better), margin {margin:g}"
    )
    if gain >= margin - _SCORE_TOLERANCE and gain > _SCORE_TOLERANCE:
        return True, f"promoted: {detail}"
    return False, f"refused: {detail}" + (" (a tie keeps the champion)" if abs(gain) <= _SCORE_TOLERANCE else "")


@dataclass(frozen=True)
class PromotionResult:
    promoted: bool
    reason: str
    champion: str | None  # the champion's version after the decision
    version: str  # the candidate's version


class Registry(Runs):
    """Registered models of one tracking configuration: register, look up, promote."""


    def _logged_model(self, model_uri: str):
        """The LoggedModel behind a ``models:/m-...`` URI (what :meth:`RunContext.log_model` returns)."""
        from mlflow.exceptions import MlflowException

        if not model_uri.startswith("models:/m-"):
            raise TrackingError(f"register {model_uri}: expected the models:/m-... URI returned by log_model")
        try:
            logged = self.client.get_logged_model(model_uri[len("models:/") :].split("/", 1)[0])
        except MlflowException as err:
            raise TrackingError(f"register {model_uri}: {err.message}") from err
        if not logged.source_run_id:
            raise TrackingError(f"register {model_uri}: the logged model has no source run")
        return logged

    def register_model(
        self,
        name: str,
        model_uri: str,
        *,
        metrics: Mapping[str, float] | None = None,
        benchmarks: list[str] | None = None,
        data_hash: str | None = None,
        config_hash: str | None = None,
        base_model: str | None = None,
        tags: Mapping[str, Any] | None = None,
        alias: str | None = CHALLENGER,
        idempotency_key: str | None = None,
    ):
        """Register a logged model as a version of ``name``; returns the ModelVersion.

        Registering a model of a run that already has a version returns that version (a retried
        pipeline step must not create a second one); its tags are re-applied. A step that logs
        its model in a fresh run on every attempt passes ``idempotency_key`` (e.g. the pipeline
        run id and the step's name): a version carrying the same key is returned instead of a new
        one. ``alias`` (by default ``challenger``) is set on the version unless it is already the
        champion.
        """
        from mlflow.exceptions import MlflowException

        self._make_current()
        logged = self._logged_model(model_uri)
        run_id = logged.source_run_id
        version_tags = {
            TAG_CODE_VERSION: code_version(),
            TAG_BENCHMARKS: ",".join(sorted(benchmarks or [])),
            **{f"{METRIC_TAG_PREFIX}{metric_key(k)}": repr(float(v)) for k, v in (metrics or {}).items()},
        }
        for key, value in ((TAG_DATA_HASH, data_hash), (TAG_CONFIG_HASH, config_hash), (TAG_BASE_MODEL, base_model)):
            if value is not None:
                version_tags[key] = value
        version_tags.update({metric_key(k): str(v) for k, v in (tags or {}).items()})
        if idempotency_key:
            version_tags[TAG_REGISTRATION_KEY] = idempotency_key

        try:
            self.client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise TrackingError(f"register {name}: {err.message}") from err
        existing = self.client.search_model_versions(f"name = '{quote(name)}' and run_id = '{run_id}'")
        if not existing and idempotency_key:
            existing = self.client.search_model_versions(
                f"name = '{quote(name)}' and tags.{TAG_REGISTRATION_KEY} = '{quote(idempotency_key)}'"
            )
        if existing:
            mv = min(existing, key=lambda v: int(v.version))
            for k, v in version_tags.items():
                self.client.set_model_version_tag(name, mv.version, k, v)
        else:
            mv = self.client.create_model_version(
                name, source=model_uri, run_id=run_id, tags=version_tags, model_id=logged.model_id
            )
        if alias and CHAMPION not in self._aliases_of(name, mv.version):
            self.client.set_registered_model_alias(name, alias, mv.version)
        self._link_versions(logged, name, str(mv.version))
        return self.client.get_model_version(name, mv.version)

    def _link_versions(self, logged, name: str, version: str) -> None:
        """Name the version on its logged model (the tag MLflow's own registration sets), so the
        logged model's page shows where it is registered."""
        import json

        from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

        linked = json.loads(logged.tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
        if {"name": name, "version": version} not in linked:
            linked.append({"name": name, "version": version})
            self.client.set_logged_model_tags(logged.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(linked)})

    def _aliases_of(self, name: str, version: str) -> list[str]:
        return list(self.client.get_model_version(name, str(version)).aliases)

    def get_version(self, name: str, version_or_alias: str):
        """A model version by number or by alias (``champion``); TrackingError when missing."""
        from mlflow.exceptions import MlflowException

        try:
            if str(version_or_alias).isdigit():
                return self.client.get_model_version(name, str(version_or_alias))
            return self.client.get_model_version_by_alias(name, version_or_alias)
        except MlflowException as err:
            raise TrackingError(f"model {name!r} version/alias {version_or_alias!r}: {err.message}") from err

    def champion(self, name: str):
        """The champion version of ``name``, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def list_versions(self, name: str | None = None) -> list:
        """Versions of one registered model (or of all), newest first within each model."""
        where = f"name = '{quote(name)}'" if name else ""
        found = self.client.search_model_versions(where) if where else self.client.search_model_versions()
        # Search results carry no aliases; fetching each version does.
        versions = [self.client.get_model_version(v.name, str(v.version)) for v in found]
        return sorted(versions, key=lambda v: (v.name, -int(v.version)))

    def _promotable(self, name: str, version: str | int, metric: str, margin: float, min_score: float | None):
        """The candidate version and the champion, once every input of a promotion has been
        checked; TrackingError names the first bad one, and nothing has been written."""
        import math

        from mlflow.exceptions import MlflowException

        if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
            raise TrackingError(f"promote: margin must be a number >= 0, got {margin!r}")
        if min_score is not None and (not isinstance(min_score, (int, float)) or not math.isfinite(min_score) or min_score < 0):
            raise TrackingError(f"promote: min_score must be a number >= 0, got {min_score!r}")
        try:
            self.client.get_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise TrackingError(f"promote {name}: {err.message}") from err
            known = sorted(m.name for m in self.client.search_registered_models())
            raise TrackingError(f"promote: no registered model {name!r}; registered: {', '.join(known) or 'none'}") from None
        candidate = self.get_version(name, str(version))
        held = sorted(version_score(candidate).metrics)
        if metric_key(metric) not in held:
            raise TrackingError(
                f"promote {name} v{candidate.version}: no metric {metric_key(metric)!r} on this version; "
                f"its metrics: {', '.join(held) or 'none'}"
            )
        champ = self.champion(name)
        if champ is not None and str(champ.version) == str(candidate.version):
            raise TrackingError(f"promote {name} v{candidate.version}: it is already the champion")
        return candidate, champ

    def promote(self, name: str, version: str | int, metric: str, margin: float = GATE.margin, *,
                min_score: float | None = None, higher_is_better: bool = True,
                champion_score: VersionScore | None = None) -> PromotionResult:
        """Make ``version`` the champion if it reaches ``min_score`` and beats the current one by
        ``margin`` on ``metric`` (same benchmarks; see :func:`decide_promotion`). Otherwise nothing
        moves.

        Every input is checked first: an unknown model or version, a metric the version does not
        hold (the error lists the ones it does), a bad margin or floor, or a version that already is
        the champion raise TrackingError with nothing written. The decision and its reason are
        written on the candidate only, as tags ``promotion.decision`` and ``promotion.reason``: the
        champion's tags are the record of its own promotion and stay as they are, also when it is
        replaced (it only loses the alias).

        ``champion_score``: the champion's numbers from an evaluation made beside the candidate's
        (the retraining run's), compared instead of those on its version; its ``version`` must be
        the champion's."""
        candidate, champ = self._promotable(name, version, metric, margin, min_score)
        if champion_score is not None and (champ is None or champion_score.version != str(champ.version)):
            raise TrackingError(f"promote {name}: the champion score given is v{champion_score.version}'s, "
                                f"the champion is {f'v{champ.version}' if champ else 'none'}")
        promoted, reason = decide_promotion(
            version_score(candidate), champion_score or (version_score(champ) if champ else None), metric, margin,
            higher_is_better, min_score=min_score,
        )
        v = str(candidate.version)
        if promoted:
            self.client.set_registered_model_alias(name, CHAMPION, v)
            if CHALLENGER in candidate.aliases:
                self.client.delete_registered_model_alias(name, CHALLENGER)
        self.client.set_model_version_tag(name, v, TAG_DECISION, "promoted" if promoted else "refused")
        self.client.set_model_version_tag(name, v, TAG_REASON, reason)
        after = self.champion(name)
        return PromotionResult(promoted, reason, str(after.version) if after else None, v)
