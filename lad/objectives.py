"""Policy objectives: LAD (every f-divergence of the paper) and the GRPO family, behind one registry.

Every entry of ``POLICY_LOSSES`` is a ``PolicyLoss``: a pure function of tensors and the pydantic
model of its settings (``algorithm.loss_params``). Called as

    entry(log_prob, old_log_prob, advantages, response_mask, *, norm=None, norm_constant=None,
          weights=None, **params) -> (loss, metrics)

it validates ``params`` against that model; ``log_prob``, ``old_log_prob``, ``response_mask`` are
[B, T], ``advantages`` is [B] (one per sequence) or [B, T], ``loss`` is a scalar tensor and
``metrics`` a dict of floats. ``norm`` carries the normalisers of the *whole* mini-batch, so that
losses summed over micro-batches equal the full-batch loss exactly (gradient accumulation without
bias). ``weights`` ([B] or [B, T], constants) multiply each sequence's or token's loss before
aggregation: the rollout correction's truncated importance weights (``rollout_is_weights``).
``register_policy_loss`` adds entries, from this module or from outside the package.

LAD (arXiv 2602.20132): with u = kappa * A, l = log pi_theta - log pi_old and x = exp(l - u), the
per-sample loss is exp(u) * f(x) for an f-divergence generator f. Each generator is written in
log space as a function of (l, u) so nothing overflows for |l|, |u| up to the clamp.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Optional, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lad.advantages import get_advantage

LOG2 = math.log(2.0)

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
LOSS_AGG_MODES = get_args(AggMode)
RATIO_LEVELS = ("token", "sequence")


# --------------------------------------------------------------------------------------------
# f-divergence generators
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Divergence:
    """An f-divergence generator in three forms.

    ``f`` and ``f_prime`` take x = ratio / exp(u) (used by tests and documentation);
    ``weighted`` takes (l, u) and returns exp(u) * f(exp(l - u)) computed in log space, the
    per-sample LAD loss. Its derivative in l is f'(x) * ratio.
    """

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    f_prime: Callable[[torch.Tensor], torch.Tensor]
    weighted: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # True when f'(1) = 0, i.e. the gradient vanishes once the ratio reaches exp(u).
    self_braking: bool


def _js_weighted(l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    # exp(u) f(x) = 1/2 [ratio (l - u) - (ratio + e^u) (log(1 + x) - log 2)], log(1 + x) = logaddexp(l - u, 0)
    d = l - u
    log1p_x = torch.logaddexp(d, torch.zeros_like(d))
    return 0.5 * (torch.exp(l) * d - (torch.exp(l) + torch.exp(u)) * (log1p_x - LOG2))


def _js_f(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x * torch.log(x) - (x + 1) * torch.log((x + 1) / 2))


DIVERGENCES: dict[str, Divergence] = {
    d.name: d
    for d in (
        Divergence(
            name="js",
            f=_js_f,
            f_prime=lambda x: 0.5 * torch.log(2 * x / (x + 1)),
            weighted=_js_weighted,
            self_braking=True,
        ),
        Divergence(
            name="hd",
            f=lambda x: 0.5 * (torch.sqrt(x) - 1) ** 2,
            f_prime=lambda x: 0.5 * (1 - 1 / torch.sqrt(x)),
            # exp(u) * 1/2 (sqrt(x) - 1)^2 = 1/2 (e^{l/2} - e^{u/2})^2
            weighted=lambda l, u: 0.5 * (torch.exp(0.5 * l) - torch.exp(0.5 * u)) ** 2,
            self_braking=True,
        ),
        Divergence(
            name="tv",
            f=lambda x: torch.abs(x - 1),
            f_prime=lambda x: torch.sign(x - 1),
            weighted=lambda l, u: torch.abs(torch.exp(l) - torch.exp(u)),
            self_braking=True,
        ),
        Divergence(
            name="kl",
            f=lambda x: x * torch.log(x),
            f_prime=lambda x: torch.log(x) + 1,
            weighted=lambda l, u: torch.exp(l) * (l - u),
            self_braking=False,
        ),
        Divergence(
            name="rkl",
            f=lambda x: -torch.log(x),
            f_prime=lambda x: -1 / x,
            # The paper's reference form: exp(u) * (-log x) = -exp(u) * l + exp(u) * u, and the
            # second term does not depend on theta.
            weighted=lambda l, u: -torch.exp(u) * l,
            self_braking=False,
        ),
        Divergence(
            name="jf",
            f=lambda x: (x - 1) * torch.log(x),
            f_prime=lambda x: torch.log(x) + 1 - 1 / x,
            weighted=lambda l, u: (torch.exp(l) - torch.exp(u)) * (l - u),
            self_braking=True,
        ),
        Divergence(
            name="ps",
            f=lambda x: (x - 1) ** 2 / x,
            f_prime=lambda x: 1 - 1 / x**2,
            # exp(u) (x - 1)^2 / x = ratio - 2 e^u + e^{2u - l}
            weighted=lambda l, u: torch.exp(l) - 2 * torch.exp(u) + torch.exp(2 * u - l),
            self_braking=True,
        ),
    )
}


def get_divergence(name: str) -> Divergence:
    try:
        return DIVERGENCES[name]
    except KeyError:
        raise ValueError(f"unknown divergence {name!r}; expected one of {sorted(DIVERGENCES)}") from None


# --------------------------------------------------------------------------------------------
# Aggregation, exact under micro-batching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchNorm:
    """Normalisers of the whole mini-batch a micro-batch belongs to.

    Pass the same ``BatchNorm`` to every micro-batch of a mini-batch and sum the micro-batch
    losses: the sum equals the loss of the whole mini-batch computed at once. Left as ``None``,
    each count is taken from the tensors at hand (the micro-batch is the whole batch).

    num_tokens: response tokens in the mini-batch (token-mean).
    num_seqs: sequences in the mini-batch (every seq-mean mode, and ratio_level="sequence").
    """

    num_tokens: float | None = None
    num_seqs: float | None = None

    @staticmethod
    def of(response_mask: torch.Tensor) -> "BatchNorm":
        """The normalisers of a full mini-batch, to hand to each of its micro-batches."""
        return BatchNorm(num_tokens=float(response_mask.sum()), num_seqs=float(response_mask.shape[0]))


def aggregate(
    loss_mat: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    *,
    norm: BatchNorm | None = None,
    norm_constant: float | None = None,
) -> torch.Tensor:
    """Reduce a [B, T] per-token loss to a scalar, with verl's meanings of the modes.

    token-mean: sum over all response tokens / number of response tokens (DAPO).
    seq-mean-token-mean: mean over sequences of each sequence's token mean (original GRPO).
    seq-mean-token-sum: mean over sequences of each sequence's token sum.
    seq-mean-token-sum-norm: mean over sequences of token sum / norm_constant (Dr. GRPO); the
        constant defaults to T, the padded response length, and should be the max response length.
    """
    norm = norm or BatchNorm()
    mask = response_mask.to(loss_mat.dtype)
    masked = torch.where(response_mask.bool(), loss_mat, torch.zeros_like(loss_mat))
    num_seqs = norm.num_seqs if norm.num_seqs is not None else loss_mat.shape[0]
    if loss_agg_mode == "token-mean":
        num_tokens = norm.num_tokens if norm.num_tokens is not None else mask.sum()
        return masked.sum() / torch.clamp(torch.as_tensor(num_tokens, dtype=loss_mat.dtype), min=1.0)
    if loss_agg_mode == "seq-mean-token-mean":
        seq_len = torch.clamp(mask.sum(dim=-1), min=1.0)
        return (masked.sum(dim=-1) / seq_len).sum() / num_seqs
    if loss_agg_mode == "seq-mean-token-sum":
        return masked.sum() / num_seqs
    if loss_agg_mode == "seq-mean-token-sum-norm":
        constant = norm_constant if norm_constant is not None else loss_mat.shape[-1]
        return masked.sum() / (num_seqs * constant)
    raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}; expected one of {list(LOSS_AGG_MODES)}")


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _check_shapes(log_prob, old_log_prob, advantages, response_mask) -> None:
    if log_prob.shape != old_log_prob.shape or log_prob.shape != response_mask.shape or log_prob.dim() != 2:
        raise ValueError(
            "log_prob, old_log_prob and response_mask must share one [B, T] shape; got "
            f"{tuple(log_prob.shape)}, {tuple(old_log_prob.shape)}, {tuple(response_mask.shape)}"
        )
    if advantages.shape not in (log_prob.shape[:1], log_prob.shape):
        raise ValueError(
            f"advantages must be [B]={tuple(log_prob.shape[:1])} or [B, T]={tuple(log_prob.shape)}; "
            f"got {tuple(advantages.shape)}"
        )


def _check_weights(weights: torch.Tensor | None, response_mask: torch.Tensor) -> None:
    if weights is not None and weights.shape not in (response_mask.shape[:1], response_mask.shape):
        raise ValueError(f"weights must be [B]={tuple(response_mask.shape[:1])} or [B, T]={tuple(response_mask.shape)}; "
                         f"got {tuple(weights.shape)}")


def _weighted(loss_mat: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """A [B, T] per-token loss times constant per-sequence [B] or per-token [B, T] weights (None: as it is)."""
    if weights is None:
        return loss_mat
    return loss_mat * (weights.unsqueeze(-1) if weights.dim() == 1 else weights).detach().to(loss_mat.dtype)


def _token_advantages(advantages: torch.Tensor, response_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B] or [B, T] advantages as [B, T], zero (not garbage) on padding."""
    adv = advantages.unsqueeze(-1).expand(response_mask.shape) if advantages.dim() == 1 else advantages
    return torch.where(response_mask.bool(), adv.to(dtype), torch.zeros((), dtype=dtype))


def _log_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """log pi_theta - log pi_old, zero on padding so that padded values (even inf or nan) stay inert."""
    return torch.where(response_mask.bool(), log_prob - old_log_prob, torch.zeros((), dtype=log_prob.dtype))


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    mask = mask.to(values.dtype)
    return float((values * mask).sum() / torch.clamp(mask.sum(), min=1.0))


def _masked_max(values: torch.Tensor, mask: torch.Tensor) -> float:
    if not bool(mask.any()):
        return 0.0
    return float(values[mask.bool()].max())


def _ratio_metrics(l: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    ratio = torch.exp(l)
    return {
        "ratio_mean": _masked_mean(ratio, mask),
        "ratio_max": _masked_max(ratio, mask),
        # k3 estimator of KL(pi_old || pi_theta) on samples from pi_old: non-negative, low variance.
        "approx_kl": _masked_mean(torch.expm1(l) - l, mask),
    }


# --------------------------------------------------------------------------------------------
# Settings and the registry
# --------------------------------------------------------------------------------------------


class LossParams(BaseModel):
    """The settings of a policy loss (``algorithm.loss_params``); every loss subclasses it.

    ``loss_agg_mode`` belongs to every loss because the KL penalty (``kl_penalty``) is aggregated
    with it: the penalty and the loss it is added to must weigh tokens alike.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    loss_agg_mode: AggMode = Field("token-mean", description=f"one of {list(LOSS_AGG_MODES)}; see ``aggregate``")


LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class PolicyLoss:
    """A registry entry: ``fn(log_prob, old_log_prob, advantages, response_mask, params, *, norm,
    norm_constant)`` with ``params`` an instance of ``params``, the model of its settings.

    ``fn`` takes ``weights`` (see the module docstring) where the trainer's
    ``algorithm.rollout_correction`` is to apply to it; the built-in losses do.

    ``advantage`` names the group advantage estimator the method is defined with; the trainer
    uses it when ``algorithm.advantage`` is unset. Likewise ``dynamic_sampling`` and
    ``overlong_shaping``: whether the method samples until its groups carry signal and shapes
    the reward of responses near the length limit (DAPO does both), the trainer's
    ``algorithm.dynamic_sampling`` and ``reward.overlong.enabled`` when those are unset.
    """

    name: str
    params: type[LossParams]
    fn: LossFn
    advantage: str = "grpo"
    dynamic_sampling: bool = False
    overlong_shaping: bool = False

    def settings(self, **params: Any) -> LossParams:
        """``params`` validated against this loss's model; the ValueError names every bad field."""
        try:
            return self.params(**params)
        except ValidationError as err:
            problems = []
            for e in err.errors():
                field = ".".join(map(str, e["loc"]))
                if e["type"] == "extra_forbidden":
                    problems.append(f"unexpected keyword argument {field!r} ({self.name} takes {', '.join(sorted(self.params.model_fields))})")
                else:
                    problems.append(f"{field}: {e['ctx']['error'] if e['type'] == 'value_error' else e['msg']}")
            raise ValueError(f"loss_params for {self.name!r}: {'; '.join(problems)}") from None

    def __call__(
        self,
        log_prob: torch.Tensor,
        old_log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        *,
        norm: BatchNorm | None = None,
        norm_constant: float | None = None,
        weights: torch.Tensor | None = None,
        **params: Any,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        # weights only when given: a loss registered from outside may not take them
        extra = {} if weights is None else {"weights": weights}
        return self.fn(log_prob, old_log_prob, advantages, response_mask, self.settings(**params),
                       norm=norm, norm_constant=norm_constant, **extra)

    def takes_weights(self) -> bool:
        """Whether ``fn`` accepts ``weights`` (the rollout correction's)."""
        parameters = inspect.signature(self.fn).parameters
        return "weights" in parameters or any(q.kind is inspect.Parameter.VAR_KEYWORD for q in parameters.values())


POLICY_LOSSES: dict[str, PolicyLoss] = {}


def register_policy_loss(name: str, params: type[LossParams], *, advantage: str = "grpo", dynamic_sampling: bool = False,
                         overlong_shaping: bool = False) -> Callable[[LossFn], PolicyLoss]:
    """Decorator: register ``fn`` as the policy loss ``name`` (``algorithm.objective``), its settings
    validated by ``params`` (a ``LossParams`` subclass), with the trainer defaults of ``PolicyLoss``.
    Returns the registry entry.

    From outside the package, import the registering module before loading a config that names it.
    """
    if not (isinstance(params, type) and issubclass(params, LossParams)):
        raise TypeError(f"policy loss {name!r}: params must be a subclass of LossParams; got {params!r}")
    get_advantage(advantage)

    def register(fn: LossFn) -> PolicyLoss:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name] = entry = PolicyLoss(name, params, fn, advantage, dynamic_sampling, overlong_shaping)
        return entry

    return register


def get_policy_loss(name: str) -> PolicyLoss:
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown policy loss {name!r}; expected one of {sorted(POLICY_LOSSES)}") from None


# --------------------------------------------------------------------------------------------
# LAD
# --------------------------------------------------------------------------------------------


class LADParams(LossParams):
    """LAD's settings; the defaults are the paper's for math."""

    divergence: str = Field("js", description=f"f-divergence generator: one of {sorted(DIVERGENCES)}")
    kappa: float = Field(4.0, gt=0, description="1/eta: the ratio is pulled towards exp(kappa * A)")
    ratio_level: str = Field("token", description="token (per-token l, the sequence advantage broadcast) or sequence "
                             "(l summed over the response, one loss per sequence; loss_agg_mode then only aggregates the KL penalty)")
    loss_agg_mode: AggMode = "token-mean"
    clamp: float = Field(20.0, gt=0, description="bound on |l| and |u| before any exp")

    @field_validator("divergence")
    @classmethod
    def _divergence(cls, name: str) -> str:
        get_divergence(name)
        return name

    @field_validator("ratio_level")
    @classmethod
    def _ratio_level(cls, level: str) -> str:
        if level not in RATIO_LEVELS:
            raise ValueError(f"unknown ratio_level {level!r}; expected one of {list(RATIO_LEVELS)}")
        return level


@register_policy_loss("lad", LADParams)
def lad_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    p: LADParams,
    *,
    norm: BatchNorm | None = None,
    norm_constant: float | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """LAD loss and its diagnostics (registry entry ``lad``); see ``lad_loss`` for the arguments and
    the module docstring for ``weights`` (one per sequence under ratio_level="sequence")."""
    _check_shapes(log_prob, old_log_prob, advantages, response_mask)
    _check_weights(weights, response_mask)
    div = DIVERGENCES[p.divergence]
    mask = response_mask.to(log_prob.dtype)
    token_l = _log_ratio(log_prob, old_log_prob, response_mask)
    token_adv = _token_advantages(advantages, response_mask, log_prob.dtype)

    if p.ratio_level == "token":
        l = torch.clamp(token_l, -p.clamp, p.clamp)
        u = torch.clamp(p.kappa * token_adv, -p.clamp, p.clamp)
        loss = aggregate(_weighted(div.weighted(l, u), weights), mask, p.loss_agg_mode, norm=norm, norm_constant=norm_constant)
        metric_mask = mask
    else:
        # One advantage per sequence: the masked mean of a [B, T] input (equal to the sequence's
        # advantage when it was broadcast).
        seq_adv = token_adv.sum(-1) / mask.sum(-1).clamp(min=1.0)
        l = torch.clamp(token_l.sum(dim=-1), -p.clamp, p.clamp)
        u = torch.clamp(p.kappa * seq_adv, -p.clamp, p.clamp)
        metric_mask = (mask.sum(dim=-1) > 0).to(log_prob.dtype)
        num_seqs = norm.num_seqs if norm and norm.num_seqs is not None else log_prob.shape[0]
        if weights is not None and weights.dim() != 1:
            raise ValueError("ratio_level 'sequence' has one loss per sequence: give weights per sequence, [B]")
        per_seq = div.weighted(l, u) if weights is None else div.weighted(l, u) * weights.detach().to(l.dtype)
        loss = (per_seq * metric_mask).sum() / num_seqs

    with torch.no_grad():
        metrics = _ratio_metrics(l, metric_mask)
        metrics["x_mean"] = _masked_mean(torch.exp(l - u), metric_mask)
        metrics["past_target_frac"] = _masked_mean((l > u).to(l.dtype), metric_mask)
    return loss, metrics


def lad_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    divergence: str = "js",
    kappa: float = 4.0,
    ratio_level: str = "token",
    loss_agg_mode: str = "token-mean",
    clamp: float = 20.0,
) -> torch.Tensor:
    """The LAD policy loss E_{y ~ pi_old}[exp(u) f(x)], u = kappa A, x = exp(l - u).

    log_prob, old_log_prob, response_mask: [B, T]; advantages: [B] or [B, T].
    divergence: js (default), hd, tv, kl, rkl, jf, ps. kappa = 1/eta (paper default 4 for math).
    ratio_level: "token" (per-token l, sequence advantage broadcast) or "sequence" (l summed over
        the response, one loss per sequence, averaged over sequences; loss_agg_mode is unused).
    loss_agg_mode: see ``aggregate``. clamp bounds l and u before any exp.
    The defaults are ``LADParams``'s, written out because this signature is the public contract.
    For micro-batch-exact gradient accumulation use ``lad_policy_loss`` with a ``BatchNorm``.
    """
    loss, _ = lad_policy_loss(
        log_prob,
        old_log_prob,
        advantages,
        response_mask,
        divergence=divergence,
        kappa=kappa,
        ratio_level=ratio_level,
        loss_agg_mode=loss_agg_mode,
        clamp=clamp,
    )
    return loss


# --------------------------------------------------------------------------------------------
# GRPO family
# --------------------------------------------------------------------------------------------

ClipWidth = Annotated[float, Field(ge=0)]


class PPOClipParams(LossParams):
    """PPO clip's settings; the defaults are GRPO's (symmetric 0.2, dual clip c = 3, sequence-mean
    of token-means)."""

    clip_low: Annotated[float, Field(ge=0, lt=1)] = Field(0.2, description="the ratio is clipped below at 1 - clip_low")
    clip_high: ClipWidth = Field(0.2, description="the ratio is clipped above at 1 + clip_high")
    clip_ratio_c: Optional[float] = Field(3.0, description="dual clip: for A < 0 the loss is capped at -A * c (c > 1); None disables it")
    loss_agg_mode: AggMode = "seq-mean-token-mean"
    clamp: float = Field(20.0, gt=0, description="bound on |l| before exp")

    @field_validator("clip_ratio_c")
    @classmethod
    def _dual_clip(cls, c: Optional[float]) -> Optional[float]:
        if c is not None and c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1 (or None to disable dual clip); got {c}")
        return c


class DrGRPOParams(PPOClipParams):
    """Dr. GRPO (arXiv 2503.20783): token sums over a constant, so no response is weighted by its
    own length; the trainer passes the max response length as the constant."""

    loss_agg_mode: AggMode = "seq-mean-token-sum-norm"


class DAPOParams(PPOClipParams):
    """DAPO (arXiv 2503.14476): clip-higher (0.2 / 0.28) and token-mean."""

    clip_high: ClipWidth = 0.28
    loss_agg_mode: AggMode = "token-mean"


@register_policy_loss("grpo", PPOClipParams)
def ppo_clip_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    p: PPOClipParams,
    *,
    norm: BatchNorm | None = None,
    norm_constant: float | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate, per token: max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)).

    Dual clip: for A < 0 the loss is capped at -A * clip_ratio_c, so a token whose ratio has
    exploded cannot dominate the update. ``weights`` multiply the clipped per-token loss.
    """
    _check_shapes(log_prob, old_log_prob, advantages, response_mask)
    _check_weights(weights, response_mask)
    mask = response_mask.to(log_prob.dtype)
    adv = _token_advantages(advantages, response_mask, log_prob.dtype)
    l = torch.clamp(_log_ratio(log_prob, old_log_prob, response_mask), -p.clamp, p.clamp)
    ratio = torch.exp(l)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - p.clip_low, 1.0 + p.clip_high)
    per_token = torch.maximum(unclipped, clipped)
    dual_clipped = torch.zeros_like(per_token, dtype=torch.bool)
    if p.clip_ratio_c is not None:
        cap = -adv * p.clip_ratio_c
        dual_clipped = (adv < 0) & (per_token > cap)
        per_token = torch.where(adv < 0, torch.minimum(per_token, cap), per_token)
    loss = aggregate(_weighted(per_token, weights), mask, p.loss_agg_mode, norm=norm, norm_constant=norm_constant)
    with torch.no_grad():
        metrics = _ratio_metrics(l, mask)
        metrics["clip_frac"] = _masked_mean((clipped > unclipped).to(l.dtype), mask)
        metrics["dual_clip_frac"] = _masked_mean(dual_clipped.to(l.dtype), mask)
    return loss, metrics


# Dr. GRPO and DAPO change the defaults of the one surrogate, as verl configures them; Dr. GRPO is
# also defined with mean-only advantages (no std division), DAPO with dynamic sampling and the soft
# overlong punishment.
register_policy_loss("dr_grpo", DrGRPOParams, advantage="dr_grpo")(ppo_clip_loss.fn)
register_policy_loss("dapo", DAPOParams, dynamic_sampling=True, overlong_shaping=True)(ppo_clip_loss.fn)


# --------------------------------------------------------------------------------------------
# KL penalty to a reference policy
# --------------------------------------------------------------------------------------------


def kl_penalty(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    params: LossParams,
    *,
    norm: BatchNorm | None = None,
    norm_constant: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """k3 estimate of KL(pi_theta || pi_ref) per token, exp(d) - 1 - d with d = log pi_ref - log pi_theta
    (unbiased on samples of pi_theta, non-negative, zero gradient where the policies agree),
    aggregated with the policy loss's own ``params.loss_agg_mode`` and normalisers so that the
    penalty weighs tokens as the loss it is added to does. Returns (penalty, {"kl_ref": token mean}).
    """
    d = torch.where(response_mask.bool(), ref_log_prob - log_prob, torch.zeros((), dtype=log_prob.dtype))
    kl = torch.expm1(d) - d
    penalty = aggregate(kl, response_mask, params.loss_agg_mode, norm=norm, norm_constant=norm_constant)
    with torch.no_grad():
        return penalty, {"kl_ref": _masked_mean(kl, response_mask)}


# --------------------------------------------------------------------------------------------
# Rollout correction: truncated importance sampling
# --------------------------------------------------------------------------------------------

ROLLOUT_CORRECTIONS = ("none", "token_tis", "sequence_tis")


def rollout_is_weights(
    old_log_prob: torch.Tensor,
    rollout_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    level: str,
    cap: float,
    *,
    clamp: float = 20.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated importance weights for responses sampled by a rollout engine whose probabilities
    differ from the trainer's: w = min(pi_old / pi_rollout, cap), per token (``level`` "token") or
    per sequence ("sequence": the ratio of the whole response's probabilities, exp of the summed log
    difference). They multiply the policy loss (the ``weights`` of a registry entry): verl's
    rollout_is with rollout_is_threshold, TRL's vllm_importance_sampling_correction.

    old_log_prob, rollout_log_prob, response_mask: [B, T]. Returns the weights, [B, T] (zero on
    padding) or [B], detached, and metrics over the tokens or the sequences with a token:
    ``is_ratio_mean`` and ``is_ratio_max`` of the untruncated ratio and ``is_capped_frac``, the share
    truncated. The log ratio is clamped to +-``clamp`` before exp, so the ratio stays finite.
    """
    if level not in ("token", "sequence"):
        raise ValueError(f"unknown importance sampling level {level!r}; expected token or sequence")
    with torch.no_grad():
        d = _log_ratio(old_log_prob, rollout_log_prob, response_mask)
        mask = response_mask.to(d.dtype)
        if level == "sequence":
            d, mask = d.sum(dim=-1), (mask.sum(dim=-1) > 0).to(d.dtype)
        ratio = torch.exp(torch.clamp(d, -clamp, clamp))
        weights = torch.clamp(ratio, max=cap) * mask
        metrics = {"is_ratio_mean": _masked_mean(ratio, mask), "is_ratio_max": _masked_max(ratio, mask),
                   "is_capped_frac": _masked_mean((ratio > cap).to(d.dtype), mask)}
    return weights, metrics
