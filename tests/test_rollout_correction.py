"""The rollout correction (algorithm.rollout_correction): truncated importance weights between the
trainer's old log-probs and the rollout engine's, in closed form; every objective's loss weighted by
them; the settings; and an update whose rollout log-probs were perturbed on purpose, equal to the
update made with the true weights."""

import copy
import math
import random

import pytest
import torch
from test_rl import cfg, samples, small_model

from lad.objectives import POLICY_LOSSES, BatchNorm, get_policy_loss, rollout_is_weights
from lad.train.engine import TorchEngine
from lad.train.rl import policy_update
from lad.train.rl_batch import collate, token_logprobs

F64 = torch.float64
NAN = float("nan")
# two responses of 3 and 2 tokens; the padding holds garbage that must not leak
OLD = [[-1.0, -2.0, -0.5], [-0.3, -0.7, NAN]]
DELTA = [[-0.5, 0.2, -1.0], [0.1, -0.2, 0.0]]  # rollout = old + delta, so the ratio is exp(-delta)
MASK = [[1, 1, 1], [1, 1, 0]]


def _is_inputs():
    old = torch.tensor(OLD, dtype=F64)
    rollout = old + torch.tensor(DELTA, dtype=F64)
    rollout[1, 2] = float("inf")
    return old, rollout, torch.tensor(MASK, dtype=F64)


def test_token_weights_are_the_ratio_capped_at_c():
    w, m = rollout_is_weights(*_is_inputs(), "token", 2.0)
    ratios = [math.exp(0.5), math.exp(-0.2), math.exp(1.0), math.exp(-0.1), math.exp(0.2)]
    want = [[ratios[0], ratios[1], 2.0], [ratios[3], ratios[4], 0.0]]  # exp(1) = 2.718 is capped; padding 0
    torch.testing.assert_close(w, torch.tensor(want, dtype=F64), rtol=1e-12, atol=0.0)
    assert m == {"is_ratio_mean": pytest.approx(sum(ratios) / 5, rel=1e-12), "is_ratio_max": pytest.approx(math.e, rel=1e-12),
                 "is_capped_frac": 0.2}
    assert not w.requires_grad


def test_sequence_weights_are_the_responses_probability_ratio_capped_at_c():
    w, m = rollout_is_weights(*_is_inputs(), "sequence", 2.0)
    # row 0: exp(0.5 - 0.2 + 1.0) = exp(1.3) = 3.67, capped; row 1: exp(-0.1 + 0.2)
    torch.testing.assert_close(w, torch.tensor([2.0, math.exp(0.1)], dtype=F64), rtol=1e-12, atol=0.0)
    assert m == {"is_ratio_mean": pytest.approx((math.exp(1.3) + math.exp(0.1)) / 2, rel=1e-12),
                 "is_ratio_max": pytest.approx(math.exp(1.3), rel=1e-12), "is_capped_frac": 0.5}
    w3, _ = rollout_is_weights(*_is_inputs(), "sequence", 3.0)
    torch.testing.assert_close(w3, torch.tensor([3.0, math.exp(0.1)], dtype=F64), rtol=1e-12, atol=0.0)
    with pytest.raises(ValueError, match="unknown importance sampling level 'word'"):
        rollout_is_weights(*_is_inputs(), "word", 2.0)


# ---------------------------------------------------------------------------- weighted losses

LOG_PROB = [[-1.0, -0.5, -2.0], [-0.25, -1.5, 9.0]]
OLD_LP = [[-1.25, -0.5, -1.5], [-0.5, -1.0, 3.0]]
ADV = [0.5, -1.0]
W_TOKEN = [[1.5, 0.5, 2.0], [0.75, 1.25, 7.0]]
W_SEQ = [1.5, 0.5]


def _ppo_token(l, a, low, high, c):
    r = math.exp(l)
    loss = max(-a * r, -a * min(max(r, 1 - low), 1 + high))
    return min(loss, -a * c) if a < 0 else loss


def _js_token(l, u):
    x = math.exp(l - u)
    return math.exp(u) * 0.5 * (x * math.log(x) - (x + 1) * math.log((x + 1) / 2))


def _loss_tensors():
    return (torch.tensor(LOG_PROB, dtype=F64, requires_grad=True), torch.tensor(OLD_LP, dtype=F64),
            torch.tensor(ADV, dtype=F64), torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=F64))


@pytest.mark.parametrize("objective", ["grpo", "dapo"])
def test_ppo_losses_weigh_each_tokens_clipped_loss(objective):
    lp, old, adv, mask = _loss_tensors()
    p = get_policy_loss(objective).settings()
    loss, _ = get_policy_loss(objective)(lp, old, adv, mask, weights=torch.tensor(W_TOKEN, dtype=F64), **p.model_dump())
    per = [[_ppo_token(LOG_PROB[i][j] - OLD_LP[i][j], ADV[i], p.clip_low, p.clip_high, p.clip_ratio_c) * W_TOKEN[i][j]
            for j in range(3 if i == 0 else 2)] for i in range(2)]
    want = (sum(per[0]) + sum(per[1])) / 5 if p.loss_agg_mode == "token-mean" else (sum(per[0]) / 3 + sum(per[1]) / 2) / 2
    assert loss.item() == pytest.approx(want, rel=1e-12)
    # the gradient carries the weight: an unclipped token's is -w A r / N (token-mean) ...
    loss.backward()
    r01 = math.exp(0.0)  # token (0, 1): ratio 1, inside the clip range
    n01 = 5 if p.loss_agg_mode == "token-mean" else 6
    assert lp.grad[0, 1].item() == pytest.approx(-W_TOKEN[0][1] * ADV[0] * r01 / n01, rel=1e-12)
    # ... and the weights themselves get none
    weights = torch.tensor(W_TOKEN, dtype=F64, requires_grad=True)
    get_policy_loss(objective)(lp.detach().requires_grad_(), old, adv, mask, weights=weights)[0].backward()
    assert weights.grad is None


def test_lad_weighs_each_tokens_loss_and_each_sequences():
    lp, old, adv, mask = _loss_tensors()
    lad = get_policy_loss("lad")
    loss, _ = lad(lp, old, adv, mask, weights=torch.tensor(W_TOKEN, dtype=F64))
    per = [_js_token(LOG_PROB[i][j] - OLD_LP[i][j], 4.0 * ADV[i]) * W_TOKEN[i][j] for i in range(2) for j in range(3 if i == 0 else 2)]
    assert loss.item() == pytest.approx(sum(per) / 5, rel=1e-12)
    seq, _ = lad(lp, old, adv, mask, weights=torch.tensor(W_SEQ, dtype=F64), ratio_level="sequence")
    ls = [sum(LOG_PROB[0][j] - OLD_LP[0][j] for j in range(3)), sum(LOG_PROB[1][j] - OLD_LP[1][j] for j in range(2))]
    assert seq.item() == pytest.approx(sum(_js_token(ls[i], 4.0 * ADV[i]) * W_SEQ[i] for i in range(2)) / 2, rel=1e-12)
    with pytest.raises(ValueError, match=r"ratio_level 'sequence' has one loss per sequence: give weights per sequence, \[B\]"):
        lad(lp, old, adv, mask, weights=torch.tensor(W_TOKEN, dtype=F64), ratio_level="sequence")


@pytest.mark.parametrize("objective", sorted(POLICY_LOSSES))
def test_every_objective_takes_weights_per_token_or_per_sequence(objective):
    lp, old, adv, mask = _loss_tensors()
    entry = get_policy_loss(objective)
    assert entry.takes_weights()
    plain, _ = entry(lp, old, adv, mask)
    ones, _ = entry(lp, old, adv, mask, weights=torch.ones(2, 3, dtype=F64))
    assert ones.item() == plain.item()
    per_seq, _ = entry(lp, old, adv, mask, weights=torch.tensor(W_SEQ, dtype=F64))
    broadcast, _ = entry(lp, old, adv, mask, weights=torch.tensor(W_SEQ, dtype=F64)[:, None].expand(2, 3))
    assert per_seq.item() == pytest.approx(broadcast.item(), rel=1e-15)
    # the loss is linear in the weights: the sum of each token's loss alone, weighted
    w = torch.tensor(W_TOKEN, dtype=F64)
    whole, _ = entry(lp, old, adv, mask, weights=w)
    parts = 0.0
    for i in range(2):
        for j in range(3):
            one = torch.zeros(2, 3, dtype=F64)
            one[i, j] = 1.0
            parts += float(w[i, j]) * entry(lp, old, adv, mask, weights=one)[0].item()
    assert whole.item() == pytest.approx(parts, rel=1e-12)
    with pytest.raises(ValueError, match=r"weights must be \[B\]=\(2,\) or \[B, T\]=\(2, 3\); got \(3,\)"):
        entry(lp, old, adv, mask, weights=torch.ones(3, dtype=F64))


# ---------------------------------------------------------------------------------- settings


def test_the_settings_default_to_none_with_a_cap_of_two_and_refuse_what_cannot_be_weighed():
    c = cfg()
    assert (c.algorithm.rollout_correction, c.algorithm.rollout_correction_cap) == ("none", 2.0)
    assert cfg(**{"algorithm.rollout_correction": "sequence_tis", "algorithm.rollout_correction_cap": 5.0}).algorithm.rollout_correction_cap == 5.0
    with pytest.raises(ValueError, match=r"rollout_correction\n  Input should be 'none', 'token_tis' or 'sequence_tis'"):
        cfg(**{"algorithm.rollout_correction": "tis"})
    with pytest.raises(ValueError, match=r"rollout_correction_cap\n  Input should be greater than or equal to 1"):
        cfg(**{"algorithm.rollout_correction_cap": 0.5})
    with pytest.raises(ValueError, match=r"rollout_correction token_tis weighs tokens, but ratio_level 'sequence' has one "
                                         r"loss per response: use sequence_tis"):
        cfg(**{"algorithm.rollout_correction": "token_tis", "algorithm.loss_params": {"ratio_level": "sequence"}})
    assert cfg(**{"algorithm.rollout_correction": "sequence_tis", "algorithm.loss_params": {"ratio_level": "sequence"}})


def test_a_loss_from_outside_without_weights_is_refused_under_a_correction():
    from lad.objectives import LossParams, register_policy_loss

    @register_policy_loss("test_no_weights", LossParams)
    def no_weights(log_prob, old_log_prob, advantages, response_mask, p, *, norm=None, norm_constant=None):
        return (log_prob * 0).sum(), {}

    try:
        assert not no_weights.takes_weights()
        assert cfg(**{"algorithm.objective": "test_no_weights"}).algorithm.rollout_correction == "none"
        with pytest.raises(ValueError, match=r"rollout_correction token_tis: the policy loss 'test_no_weights' takes no weights argument"):
            cfg(**{"algorithm.objective": "test_no_weights", "algorithm.rollout_correction": "token_tis"})
    finally:
        del POLICY_LOSSES["test_no_weights"]


# ------------------------------------------------------------------ the update, log-probs perturbed


def _with_rollout_logprobs(model, delta_range, seed=0):
    """test_rl's 16 samples whose rollout log-probs are the model's own plus a known perturbation."""
    rng = random.Random(seed)
    ss = samples()
    for s in ss:
        with torch.no_grad():
            true = token_logprobs(model, collate([s], 0, torch.device("cpu")), 1.0)[0][0]
        delta = torch.tensor([rng.uniform(-delta_range, delta_range) for _ in s.response_ids], dtype=F64)
        s.sampling_logprobs = (true + delta).tolist()
        s.true_logprobs, s.delta = true, delta
    return ss


def _update(c, batch, model):
    engine = TorchEngine(model, c.optim, c.engine, total_steps=10, grad_accum=len(batch) // c.train.micro_batch_size)
    return engine.model, policy_update(engine, batch, c, step=0, pad_id=0, ref_model=None)


def _reference(c, batch, model, weights):
    """One optimizer step on the whole batch at once, the loss weighted by ``weights`` [B, T] or [B]."""
    engine = TorchEngine(model, c.optim, c.engine, total_steps=10, grad_accum=1)
    b = collate(batch, 0, torch.device("cpu"))
    logp, _ = token_logprobs(engine.forward, b, 1.0)
    old = logp.detach().float().to(logp.dtype)  # the trainer keeps old log-probs in float32
    adv = torch.tensor([s.advantage for s in batch], dtype=torch.float32)
    mask = b["response_mask"]
    loss, _ = get_policy_loss(c.algorithm.objective).fn(logp, old, adv, mask, c.algorithm.loss_settings(),
                                                        norm=BatchNorm.of(mask), norm_constant=float(c.rollout.max_new_tokens),
                                                        weights=weights)
    engine.backward(loss)
    engine.step()
    return engine.model


def _max_diff(a, b):
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))


# Adam's eps far above the gradients makes its first step lr * g / eps: the update follows the
# gradient's size, which the weights change, and not only its sign.
OPTIM = {"optim.lr": 1.0, "optim.eps": 1.0, "train.micro_batch_size": 4}


@pytest.mark.parametrize("objective, level", [("lad", "token"), ("grpo", "token"), ("lad", "sequence"), ("dr_grpo", "sequence")])
def test_the_corrected_update_equals_the_update_with_the_true_weights(objective, level):
    base = small_model().double()
    c = cfg(**OPTIM, **{"algorithm.objective": objective, "algorithm.rollout_correction": f"{level}_tis"})
    # |delta| < log 2 per token (token) or summed over at most 9 tokens below log 2 (sequence): nothing capped
    batch = _with_rollout_logprobs(base, 0.69 if level == "token" else 0.07)
    corrected, m = _update(c, batch, copy.deepcopy(base))
    # the closed form: exp(-delta) per token, or exp(-sum delta) per response; stored in float32
    if level == "token":
        true = [torch.exp(-s.delta) for s in batch]
        want = torch.nn.utils.rnn.pad_sequence(true, batch_first=True)
        ratios = torch.cat(true)
    else:
        ratios = torch.stack([torch.exp(-s.delta.sum()) for s in batch])
        want = ratios
    stored = [torch.tensor(s.rollout_weights, dtype=F64) for s in batch]
    torch.testing.assert_close(torch.cat(stored), ratios, rtol=1e-6, atol=0.0)
    assert m["rollout/is_capped_frac"] == 0.0
    assert m["rollout/is_ratio_mean"] == pytest.approx(float(ratios.mean()), rel=1e-6)
    assert m["rollout/is_ratio_max"] == pytest.approx(float(ratios.max()), rel=1e-6)

    # the same step made by hand on the whole batch, with the true weights as the trainer stores them
    faithful = [torch.exp(s.true_logprobs - torch.tensor(s.sampling_logprobs, dtype=torch.float32).to(F64)).float()
                for s in batch]
    weights = (torch.nn.utils.rnn.pad_sequence(faithful, batch_first=True) if level == "token"
               else torch.stack([torch.exp((s.true_logprobs - torch.tensor(s.sampling_logprobs, dtype=torch.float32).to(F64)).sum()).float()
                                 for s in batch]))
    torch.testing.assert_close(weights.to(F64), want, rtol=1e-6, atol=0.0)
    reference = _reference(c, samples(), copy.deepcopy(base), weights)
    plain, _ = _update(cfg(**OPTIM, **{"algorithm.objective": objective}), batch, copy.deepcopy(base))
    assert _max_diff(base, corrected) > 1e-3
    assert _max_diff(corrected, reference) < 1e-10
    assert _max_diff(corrected, plain) > 1e-4  # the perturbation shows in the update only through the weights


def test_capped_weights_are_c():
    base = small_model().double()
    c = cfg(**OPTIM, **{"algorithm.rollout_correction": "token_tis"})
    batch = _with_rollout_logprobs(base, 1.5)  # exp(1.5) = 4.5: some tokens' ratios pass 2
    _, m = _update(c, batch, copy.deepcopy(base))
    ratios = torch.cat([torch.exp(-s.delta) for s in batch])
    stored = torch.cat([torch.tensor(s.rollout_weights, dtype=F64) for s in batch])
    torch.testing.assert_close(stored, ratios.clamp(max=2.0), rtol=1e-6, atol=0.0)
    capped = float((ratios > 2.0).double().mean())
    assert 0 < capped < 1 and m["rollout/is_capped_frac"] == pytest.approx(capped, abs=1e-12)


def test_with_the_true_rollout_log_probs_the_correction_changes_nothing():
    base = small_model().double()
    batch = _with_rollout_logprobs(base, 0.0)
    corrected, m = _update(cfg(**OPTIM, **{"algorithm.rollout_correction": "token_tis"}), batch, copy.deepcopy(base))
    plain, _ = _update(cfg(**OPTIM), _with_rollout_logprobs(base, 0.0), copy.deepcopy(base))
    # the rollout log-probs are stored in float32: the weights are 1 to its rounding
    assert max(abs(w - 1) for s in batch for w in s.rollout_weights) < 1e-6
    assert m["rollout/is_capped_frac"] == 0.0
    assert _max_diff(base, corrected) > 1e-3 and _max_diff(corrected, plain) < 1e-6 * _max_diff(base, corrected)
