"""Typed loss settings: each policy loss's parameter model, validated when the config loads; the
presets of PPO clip; the KL penalty aggregated as the loss is; a loss registered from outside."""

import copy
import inspect
import math

import pytest
import torch
import yaml
from pydantic import Field
from test_rl import cfg, max_diff, run_update, samples, small_model

from lad.config import ConfigError
from lad.objectives import (
    LOSS_AGG_MODES,
    POLICY_LOSSES,
    AggMode,
    LADParams,
    LossParams,
    PPOClipParams,
    aggregate,
    get_policy_loss,
    kl_penalty,
    lad_loss,
    register_policy_loss,
)
from lad.train.rl import RLConfig, load_config
from lad.train.rl_batch import collate, token_logprobs

F64 = torch.float64
DATA = {"train": {"synthetic": {"tasks": ["countdown"], "n_per_task": 8}}}

# Hand-made: two responses of 3 and 1 tokens, padding filled with garbage; C is the constant of
# seq-mean-token-sum-norm, unequal to the padded length T = 3 so that every mode differs.
LOG_PROB = [[-1.0, -0.5, -2.0], [-0.25, 9.0, 9.0]]
OLD = [[-1.25, -0.75, -1.5], [-0.5, 3.0, 3.0]]
REF = [[-1.5, -0.5, -1.0], [0.25, -7.0, -7.0]]
MASK = [[1, 1, 1], [1, 0, 0]]
ADV = [0.5, -1.0]
C = 5.0
# d = log pi_ref - log pi_theta on the response tokens, and k3 = exp(d) - 1 - d
D = [[-0.5, 0.0, 1.0], [0.5]]
K3 = [[math.exp(d) - 1 - d for d in row] for row in D]
KL_CLOSED = {
    "token-mean": (sum(K3[0]) + K3[1][0]) / 4,
    "seq-mean-token-mean": (sum(K3[0]) / 3 + K3[1][0]) / 2,
    "seq-mean-token-sum": (sum(K3[0]) + K3[1][0]) / 2,
    "seq-mean-token-sum-norm": (sum(K3[0]) + K3[1][0]) / (2 * C),
}
# d k3 / d log pi_theta = 1 - exp(d), times each token's weight in the aggregate
WEIGHTS = {
    "token-mean": [[1 / 4] * 3, [1 / 4]],
    "seq-mean-token-mean": [[1 / 6] * 3, [1 / 2]],
    "seq-mean-token-sum": [[1 / 2] * 3, [1 / 2]],
    "seq-mean-token-sum-norm": [[1 / (2 * C)] * 3, [1 / (2 * C)]],
}


def _tensors():
    return (torch.tensor(LOG_PROB, dtype=F64), torch.tensor(OLD, dtype=F64), torch.tensor(REF, dtype=F64),
            torch.tensor(MASK, dtype=F64), torch.tensor(ADV, dtype=F64))


# ------------------------------------------------------------------------ the KL penalty


@pytest.mark.parametrize("objective", sorted(POLICY_LOSSES))
def test_kl_penalty_is_aggregated_as_the_loss_is(objective):
    entry = get_policy_loss(objective)
    settings = entry.settings()
    mode = settings.loss_agg_mode
    log_prob, old, ref, mask, adv = _tensors()

    # The loss's own aggregation, read off its per-token values (each token a 1 x 1 batch): the
    # full-batch loss is the aggregate of those in `mode`, and in no other mode.
    per_token = torch.zeros_like(log_prob)
    for i, j in mask.nonzero().tolist():
        one, _ = entry.fn(log_prob[i:i + 1, j:j + 1], old[i:i + 1, j:j + 1], adv[i:i + 1], torch.ones(1, 1, dtype=F64),
                          settings, norm_constant=1.0)
        per_token[i, j] = one
    full, _ = entry.fn(log_prob, old, adv, mask, settings, norm_constant=C)
    by_mode = {m: aggregate(per_token, mask, m, norm_constant=C).item() for m in LOSS_AGG_MODES}
    assert len({round(v, 12) for v in by_mode.values()}) == 4
    assert full.item() == pytest.approx(by_mode[mode], rel=1e-12)

    # The penalty, aggregated in the same mode: value and gradient in closed form.
    lp = log_prob.clone().requires_grad_(True)
    kl, metrics = kl_penalty(lp, ref, mask, settings, norm_constant=C)
    assert kl.item() == pytest.approx(KL_CLOSED[mode], rel=1e-12)
    assert metrics == {"kl_ref": pytest.approx((sum(K3[0]) + K3[1][0]) / 4, rel=1e-12)}
    kl.backward()
    want = torch.zeros(2, 3, dtype=F64)
    for i, row in enumerate(D):
        for j, d in enumerate(row):
            want[i, j] = (1 - math.exp(d)) * WEIGHTS[mode][i][j]
    torch.testing.assert_close(lp.grad, want, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("objective", ["lad", "grpo", "dr_grpo", "dapo"])
def test_trainer_adds_the_kl_aggregated_as_its_loss(objective):
    """One on-policy mini-batch of all 16 samples: actor/loss = loss + kl_coef * KL, both aggregated
    with the objective's mode. For dr_grpo that is seq-mean-token-sum-norm over max_new_tokens;
    the trainer used to aggregate its KL with seq-mean-token-mean."""
    base, ref = small_model(0), small_model(1)
    c = cfg(**{"algorithm.objective": objective, "algorithm.kl_coef": 0.5})
    _, m = run_update(c, copy.deepcopy(base), ref=copy.deepcopy(ref))

    ss = samples()
    batch = collate(ss, 0, torch.device("cpu"))
    mask = batch["response_mask"]
    adv = torch.tensor([s.advantage for s in ss])
    with torch.no_grad():
        logp = token_logprobs(base, batch, 1.0)[0]
        ref_logp = token_logprobs(ref, batch, 1.0)[0]
    settings = c.algorithm.loss_settings()
    nc = float(c.rollout.max_new_tokens)
    policy = get_policy_loss(objective).fn(logp, logp, adv, mask, settings, norm_constant=nc)[0].item()
    d = torch.where(mask.bool(), ref_logp - logp, torch.zeros_like(logp))
    k3 = torch.expm1(d) - d
    want = policy + 0.5 * aggregate(k3, mask, settings.loss_agg_mode, norm_constant=nc).item()
    assert m["actor/kl_ref"] > 1e-3
    assert m["actor/loss"] == pytest.approx(want, rel=1e-5)
    if objective == "dr_grpo":
        assert settings.loss_agg_mode == "seq-mean-token-sum-norm"
        before_the_fix = policy + 0.5 * aggregate(k3, mask, "seq-mean-token-mean").item()
        assert abs(m["actor/loss"] - before_the_fix) > 100 * 1e-5 * abs(want)


# ------------------------------------------------------------------------ presets and defaults


def test_presets_are_ppo_clip_with_their_papers_defaults():
    grpo, dr_grpo, dapo, lad = (get_policy_loss(n) for n in ("grpo", "dr_grpo", "dapo", "lad"))
    assert grpo.fn is dr_grpo.fn is dapo.fn
    assert all(issubclass(e.params, PPOClipParams) for e in (grpo, dr_grpo, dapo))
    ppo = {"clip_low": 0.2, "clip_high": 0.2, "clip_ratio_c": 3.0, "clamp": 20.0}
    assert grpo.settings().model_dump() == ppo | {"loss_agg_mode": "seq-mean-token-mean"}
    assert dr_grpo.settings().model_dump() == ppo | {"loss_agg_mode": "seq-mean-token-sum-norm"}
    assert dapo.settings().model_dump() == ppo | {"clip_high": 0.28, "loss_agg_mode": "token-mean"}
    assert lad.settings().model_dump() == {"divergence": "js", "kappa": 4.0, "ratio_level": "token",
                                           "loss_agg_mode": "token-mean", "clamp": 20.0}
    assert {e.name: e.advantage for e in (grpo, dr_grpo, dapo, lad)} == {"grpo": "grpo", "dr_grpo": "dr_grpo",
                                                                         "dapo": "grpo", "lad": "grpo"}
    sig = inspect.signature(lad_loss)
    assert {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty} == lad.settings().model_dump()


def test_unset_advantage_is_the_objectives_own():
    assert {o: cfg(**{"algorithm.objective": o}).algorithm.advantage for o in ("lad", "grpo", "dr_grpo", "dapo")} == {
        "lad": "grpo", "grpo": "grpo", "dr_grpo": "dr_grpo", "dapo": "grpo"}
    assert cfg(**{"algorithm.objective": "dr_grpo", "algorithm.advantage": "rloo"}).algorithm.advantage == "rloo"
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'"):
        cfg(**{"algorithm.advantage": "ppo"})


# ------------------------------------------------------------------------ validation at load


@pytest.mark.parametrize("objective,params,problem", [
    ("lad", {"kappa": "x"}, "kappa: Input should be a valid number, unable to parse string as a number"),
    ("lad", {"kappa": 0}, "kappa: Input should be greater than 0"),
    ("lad", {"divergence": "alpha"}, "divergence: unknown divergence 'alpha'; expected one of ['hd', 'jf', 'js', 'kl', 'ps', 'rkl', 'tv']"),
    ("lad", {"ratio_level": "step"}, "ratio_level: unknown ratio_level 'step'; expected one of ['token', 'sequence']"),
    ("grpo", {"clip_ratio_c": 0.5}, "clip_ratio_c: clip_ratio_c must be > 1 (or None to disable dual clip); got 0.5"),
    ("grpo", {"clip_low": 1.0}, "clip_low: Input should be less than 1"),
    ("dapo", {"clip_high": -0.1}, "clip_high: Input should be greater than or equal to 0"),
    ("dr_grpo", {"loss_agg_mode": "mean"},
     "loss_agg_mode: Input should be 'token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum' or 'seq-mean-token-sum-norm'"),
    ("dapo", {"divergence": "js"}, "unexpected keyword argument 'divergence' (dapo takes clamp, clip_high, clip_low, clip_ratio_c, loss_agg_mode)"),
    ("lad", {"kappa": -1, "clamp": "big"}, "kappa: Input should be greater than 0; clamp: Input should be a valid number, unable to parse string as a number"),
])
def test_loss_params_fail_at_load_naming_the_field(tmp_path, objective, params, problem):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": DATA, "algorithm": {"objective": objective, "loss_params": params}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: algorithm: Value error, loss_params for {objective!r}: {problem}"


def test_loss_params_are_typed_and_the_shipped_presets_load_unchanged():
    from pathlib import Path

    for p in sorted(Path(__file__).resolve().parents[1].glob("configs/train/*.yaml")):
        c = load_config(p)
        assert c.algorithm.loss_params == yaml.safe_load(p.read_text())["algorithm"]["loss_params"]
        assert isinstance(c.algorithm.loss_settings(), LADParams)
        assert RLConfig.model_validate(c.model_dump()).trajectory() == c.trajectory()
    c = cfg(**{"algorithm.loss_params": {"kappa": "2", "divergence": "hd"}})
    assert c.algorithm.loss_params == {"kappa": 2.0, "divergence": "hd"}
    assert c.algorithm.loss_settings() == LADParams(kappa=2.0, divergence="hd")


def test_a_direct_call_validates_its_keywords_in_one_line():
    log_prob, old, _, mask, adv = _tensors()
    with pytest.raises(ValueError) as err:
        get_policy_loss("grpo")(log_prob, old, adv, mask, clip_low=1.5, clip_hi=0.3)
    assert str(err.value) == ("loss_params for 'grpo': clip_low: Input should be less than 1; unexpected keyword argument "
                              "'clip_hi' (grpo takes clamp, clip_high, clip_low, clip_ratio_c, loss_agg_mode)")


# ------------------------------------------------------------------------ registering from outside


@pytest.fixture
def linear_loss():
    class LinearParams(LossParams):
        scale: float = Field(1.0, gt=0)
        loss_agg_mode: AggMode = "seq-mean-token-sum"

    @register_policy_loss("test_linear", LinearParams)
    def linear(log_prob, old_log_prob, advantages, response_mask, p, *, norm=None, norm_constant=None):
        """-scale * A * ratio per token: the policy-gradient surrogate without clipping."""
        ratio = torch.exp(torch.where(response_mask.bool(), log_prob - old_log_prob, torch.zeros_like(log_prob)))
        per_token = -p.scale * advantages[:, None].to(log_prob.dtype) * ratio
        return aggregate(per_token, response_mask, p.loss_agg_mode, norm=norm, norm_constant=norm_constant), {}

    yield linear
    del POLICY_LOSSES["test_linear"]


def test_a_loss_registered_from_outside_validates_and_trains(linear_loss):
    c = cfg(**{"algorithm.objective": "test_linear", "algorithm.loss_params": {"scale": 2.0}})
    assert c.algorithm.loss_settings() == linear_loss.params(scale=2.0)
    assert c.algorithm.advantage == "grpo"
    with pytest.raises(ValueError, match=r"loss_params for 'test_linear': scale: Input should be greater than 0"):
        cfg(**{"algorithm.objective": "test_linear", "algorithm.loss_params": {"scale": 0}})

    base = small_model()
    trained, m = run_update(c, copy.deepcopy(base))
    assert max_diff(base, trained) > 1e-3
    # on-policy (ratio 1): -scale * mean over sequences of A_i * |y_i|
    ss = samples()
    assert m["actor/loss"] == pytest.approx(-2.0 * sum(s.advantage * len(s.response_ids) for s in ss) / len(ss), rel=1e-6)


def test_registration_refuses_a_taken_name_and_a_model_that_is_no_loss_params():
    with pytest.raises(ValueError, match=r"policy loss 'grpo' is already registered"):
        register_policy_loss("grpo", PPOClipParams)(get_policy_loss("grpo").fn)
    with pytest.raises(TypeError, match=r"policy loss 'x': params must be a subclass of LossParams; got <class 'dict'>"):
        register_policy_loss("x", dict)
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'mean'"):
        register_policy_loss("x", LossParams, advantage="mean")
    assert "x" not in POLICY_LOSSES
