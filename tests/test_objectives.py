import inspect
import math

import pytest
import torch

from lad.objectives import (
    DIVERGENCES,
    LOSS_AGG_MODES,
    POLICY_LOSSES,
    BatchNorm,
    aggregate,
    get_policy_loss,
    lad_loss,
    lad_policy_loss,
)

F64 = torch.float64
ALL = sorted(DIVERGENCES)
BRAKING = ["hd", "jf", "js", "ps", "tv"]


def _batch(b=4, t=6, seed=0, dtype=F64, lengths=None):
    g = torch.Generator().manual_seed(seed)
    log_prob = -torch.rand(b, t, generator=g, dtype=dtype) * 3
    old = log_prob + 0.3 * torch.randn(b, t, generator=g, dtype=dtype)
    adv = torch.randn(b, generator=g, dtype=dtype)
    lengths = lengths or [t - (i % t) for i in range(b)]
    mask = torch.zeros(b, t, dtype=dtype)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return log_prob, old, adv, mask


# ---------------------------------------------------------------- generators


@pytest.mark.parametrize("name", ALL)
def test_generator_vanishes_at_one(name):
    assert DIVERGENCES[name].f(torch.tensor(1.0, dtype=F64)).item() == 0.0


@pytest.mark.parametrize("name", ALL)
def test_generator_is_convex(name):
    f = DIVERGENCES[name].f
    x = torch.logspace(-4, 4, 200, dtype=F64)
    a, b = torch.meshgrid(x, x, indexing="ij")
    for w in (0.1, 0.5, 0.9):
        lhs = f(w * a + (1 - w) * b)
        rhs = w * f(a) + (1 - w) * f(b)
        assert bool((lhs <= rhs + 1e-9 * (1 + rhs.abs())).all())


@pytest.mark.parametrize("name", ALL)
def test_log_space_form_matches_generator(name):
    """weighted(l, u) = exp(u) f(exp(l - u)), up to a theta-free term for rkl."""
    div = DIVERGENCES[name]
    l = torch.linspace(-5, 5, 41, dtype=F64)[:, None]
    u = torch.linspace(-4, 4, 17, dtype=F64)[None, :]
    direct = torch.exp(u) * div.f(torch.exp(l - u))
    offset = torch.exp(u) * u if name == "rkl" else torch.zeros_like(u)
    torch.testing.assert_close(div.weighted(l, u) + offset, direct, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ALL)
def test_gradient_equals_closed_form(name):
    """d/d log pi of exp(u) f(x) is f'(x) * ratio, through the public loss."""
    g = torch.Generator().manual_seed(1)
    n = 64
    old = -torch.rand(n, 1, generator=g, dtype=F64) * 2
    adv = torch.randn(n, generator=g, dtype=F64)
    kappa = 2.0
    # Keep x away from 1, where tv's generator has a kink.
    l = torch.randn(n, 1, generator=g, dtype=F64) * 2
    l = torch.where((l[:, 0] - kappa * adv).abs()[:, None] < 0.05, l + 0.2, l)
    log_prob = (old + l).requires_grad_(True)
    loss, _ = lad_policy_loss(
        log_prob, old, adv, torch.ones(n, 1, dtype=F64), divergence=name, kappa=kappa,
        loss_agg_mode="seq-mean-token-sum", norm=BatchNorm(num_seqs=1),
    )
    loss.backward()
    x = torch.exp(l[:, 0] - kappa * adv)
    expected = DIVERGENCES[name].f_prime(x) * torch.exp(l[:, 0])
    rel = (log_prob.grad[:, 0] - expected).abs() / expected.abs().clamp(min=1e-300)
    assert float(rel.max()) < 1e-8


@pytest.mark.parametrize("name", BRAKING)
def test_gradient_vanishes_at_target(name):
    old = torch.tensor([[-1.0, -2.0, -0.5]], dtype=F64).repeat(3, 1)
    # Binary-exact values, so l = u holds exactly (tv has a kink there: off by one ulp its
    # gradient is +-ratio, exactly at it the subgradient 0).
    adv = torch.tensor([0.75, -0.25, 0.0], dtype=F64)
    kappa = 4.0
    log_prob = (old + kappa * adv[:, None]).requires_grad_(True)
    lad_loss(log_prob, old, adv, torch.ones_like(old), divergence=name, kappa=kappa).backward()
    assert float(log_prob.grad.abs().max()) == 0.0


@pytest.mark.parametrize("name,sign", [("kl", 1.0), ("rkl", -1.0)])
def test_kl_and_rkl_keep_a_linear_term_at_target(name, sign):
    """f'(1) = +1 for kl and -1 for rkl: the gradient at l = u is +-ratio (zero only in expectation)."""
    old = torch.tensor([[-1.0]], dtype=F64)
    adv = torch.tensor([0.5], dtype=F64)
    log_prob = (old + 2.0).requires_grad_(True)
    loss, _ = lad_policy_loss(log_prob, old, adv, torch.ones_like(old), divergence=name, kappa=4.0)
    loss.backward()
    assert log_prob.grad.item() == pytest.approx(sign * math.exp(2.0), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("name", ALL)
def test_finite_for_extreme_log_ratios_and_advantages(name, dtype):
    vals = torch.tensor([-50.0, -20.0, -1.0, 0.0, 1.0, 20.0, 50.0], dtype=dtype)
    l, a = torch.meshgrid(vals, vals / 4.0, indexing="ij")
    old = torch.full_like(l, -3.0)
    log_prob = (old + l).reshape(-1, 1).requires_grad_(True)
    for level in ("token", "sequence"):
        loss = lad_loss(log_prob, old.reshape(-1, 1), a.reshape(-1), torch.ones_like(log_prob), divergence=name,
                        kappa=4.0, ratio_level=level)
        (grad,) = torch.autograd.grad(loss, log_prob)
        assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())


@pytest.mark.parametrize(
    "policy_loss,kwargs",
    [("lad", {"ratio_level": "token"}), ("lad", {"ratio_level": "sequence"})]
    + [(name, {}) for name in sorted(POLICY_LOSSES) if name != "lad"],
)
def test_padding_cannot_change_loss_or_gradient(policy_loss, kwargs):
    fn = get_policy_loss(policy_loss)
    log_prob, old, _, mask = _batch(lengths=[6, 3, 1, 4])
    adv = torch.randn(4, 6, dtype=F64)
    garbage_lp, garbage_old, garbage_adv = log_prob.clone(), old.clone(), adv.clone()
    pad = mask == 0
    garbage_lp[pad] = float("-inf")
    garbage_old[pad] = float("nan")
    garbage_adv[pad] = 1e30
    results = []
    for lp, o, a in ((log_prob, old, adv), (garbage_lp, garbage_old, garbage_adv)):
        lp = lp.clone().requires_grad_(True)
        loss, _ = fn(lp, o, a, mask, **kwargs)
        loss.backward()
        results.append((loss.detach(), lp.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    assert float(results[1][1][pad].abs().max()) == 0.0


# ---------------------------------------------------------------- aggregation


def test_aggregation_modes_hand_computed():
    loss_mat = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=F64)
    assert aggregate(loss_mat, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(loss_mat, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(loss_mat, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    assert aggregate(loss_mat, mask, "seq-mean-token-sum-norm").item() == pytest.approx(10 / (2 * 3))
    assert aggregate(loss_mat, mask, "seq-mean-token-sum-norm", norm_constant=8).item() == pytest.approx(10 / 16)
    with pytest.raises(ValueError, match="unknown loss_agg_mode 'mean'"):
        aggregate(loss_mat, mask, "mean")


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_lad_loss_hand_computed_per_mode(mode):
    log_prob = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]], dtype=F64)
    old = torch.tensor([[-1.2, -1.5], [-0.7, 7.0]], dtype=F64)
    mask = torch.tensor([[1, 1], [1, 0]], dtype=F64)
    adv = torch.tensor([0.25, -0.5], dtype=F64)
    kappa = 2.0
    l = log_prob - old
    u = kappa * adv[:, None]
    js = DIVERGENCES["js"].f
    per = torch.exp(u) * js(torch.exp(l - u))
    e00, e01, e10 = per[0, 0].item(), per[0, 1].item(), per[1, 0].item()
    expected = {
        "token-mean": (e00 + e01 + e10) / 3,
        "seq-mean-token-mean": ((e00 + e01) / 2 + e10) / 2,
        "seq-mean-token-sum": ((e00 + e01) + e10) / 2,
        "seq-mean-token-sum-norm": ((e00 + e01) + e10) / (2 * 2),
    }[mode]
    got = lad_loss(log_prob, old, adv, mask, kappa=kappa, loss_agg_mode=mode).item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_sequence_level_ratio_hand_computed():
    log_prob = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]], dtype=F64)
    old = torch.tensor([[-1.2, -1.5], [-0.7, 7.0]], dtype=F64)
    mask = torch.tensor([[1, 1], [1, 0]], dtype=F64)
    adv = torch.tensor([0.25, -0.5], dtype=F64)
    l = torch.tensor([0.2 - 0.5, 0.2], dtype=F64)
    u = 4.0 * adv
    expected = (torch.exp(u) * DIVERGENCES["hd"].f(torch.exp(l - u))).mean().item()
    got = lad_loss(log_prob, old, adv, mask, divergence="hd", ratio_level="sequence").item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_clamp_bounds_log_ratio_and_advantage():
    old = torch.zeros(1, 1, dtype=F64)
    big = lad_loss(old + 100.0, old, torch.tensor([100.0], dtype=F64), torch.ones(1, 1, dtype=F64), divergence="kl")
    at_clamp = lad_loss(old + 20.0, old, torch.tensor([5.0], dtype=F64), torch.ones(1, 1, dtype=F64), divergence="kl")
    assert big.item() == at_clamp.item() == 0.0  # l = u = 20 after clamping: ratio * log x = 0


CASES = [("lad", {"divergence": d, "loss_agg_mode": m}) for d in ("js", "ps") for m in LOSS_AGG_MODES]
CASES += [("lad", {"divergence": "js", "ratio_level": "sequence"})]
CASES += [(name, {"loss_agg_mode": m}) for name in ("grpo", "dapo") for m in LOSS_AGG_MODES]
CASES += [("dr_grpo", {"norm_constant": 16.0})]


@pytest.mark.parametrize("name,kwargs", CASES)
def test_micro_batches_accumulate_to_the_full_batch(name, kwargs):
    fn = get_policy_loss(name)
    log_prob, old, adv, mask = _batch(b=6, t=5, seed=3, lengths=[5, 2, 4, 1, 3, 5])
    full_lp = log_prob.clone().requires_grad_(True)
    full, _ = fn(full_lp, old, adv, mask, **kwargs)
    full.backward()

    norm = BatchNorm.of(mask)
    micro_lp = log_prob.clone().requires_grad_(True)
    total = 0.0
    for idx in (slice(0, 1), slice(1, 4), slice(4, 6)):
        loss, _ = fn(micro_lp[idx], old[idx], adv[idx], mask[idx], norm=norm, **kwargs)
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(full.item(), rel=1e-12, abs=1e-15)
    torch.testing.assert_close(micro_lp.grad, full_lp.grad, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- metrics and API


def test_lad_metrics_hand_computed():
    old = torch.zeros(2, 1, dtype=F64)
    log_prob = torch.tensor([[0.5], [-0.5]], dtype=F64)
    adv = torch.tensor([0.0, 0.0], dtype=F64)
    _, m = lad_policy_loss(log_prob, old, adv, torch.ones_like(old))
    assert m["past_target_frac"] == 0.5
    assert m["ratio_mean"] == pytest.approx((math.exp(0.5) + math.exp(-0.5)) / 2)
    assert m["ratio_max"] == pytest.approx(math.exp(0.5))
    assert m["x_mean"] == pytest.approx(m["ratio_mean"])
    assert m["approx_kl"] == pytest.approx(((math.exp(0.5) - 1.5) + (math.exp(-0.5) - 0.5)) / 2)


def test_lad_loss_signature_is_the_public_contract():
    sig = inspect.signature(lad_loss)
    assert list(sig.parameters) == [
        "log_prob", "old_log_prob", "advantages", "response_mask",
        "divergence", "kappa", "ratio_level", "loss_agg_mode", "clamp",
    ]
    defaults = {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
    assert defaults == {"divergence": "js", "kappa": 4.0, "ratio_level": "token", "loss_agg_mode": "token-mean",
                        "clamp": 20.0}
    assert all(sig.parameters[k].kind is inspect.Parameter.KEYWORD_ONLY for k in defaults)


def test_registry_has_required_entries_and_names_bad_ones():
    assert {"lad", "grpo", "dr_grpo", "dapo"} <= set(POLICY_LOSSES)
    with pytest.raises(ValueError, match="unknown policy loss 'ppo2'"):
        get_policy_loss("ppo2")
    lp, old, adv, mask = _batch()
    with pytest.raises(ValueError, match="unknown divergence 'alpha'"):
        lad_loss(lp, old, adv, mask, divergence="alpha")
    with pytest.raises(ValueError, match="unknown ratio_level 'step'"):
        lad_loss(lp, old, adv, mask, ratio_level="step")
    with pytest.raises(ValueError, match=r"advantages must be \[B\]=\(4,\) or \[B, T\]=\(4, 6\); got \(3,\)"):
        lad_loss(lp, old, adv[:3], mask)


# ---------------------------------------------------------------- GRPO family


def _one_token(ratio: float, adv: float, name: str, **kwargs):
    old = torch.tensor([[-1.0]], dtype=F64)
    log_prob = (old + math.log(ratio)).requires_grad_(True)
    loss, metrics = get_policy_loss(name)(log_prob, old, torch.tensor([adv], dtype=F64), torch.ones_like(old), **kwargs)
    loss.backward()
    # d loss / d ratio (the chain rule through log: d/dlogp = ratio * d/dratio)
    return loss.item(), log_prob.grad.item() / ratio, metrics


@pytest.mark.parametrize(
    "ratio,adv,loss,dratio,clipped",
    [
        (1.1, 2.0, -2.2, -2.0, 0.0),  # inside the trust region
        (1.2 * (1 - 1e-9), 2.0, -2.4 * (1 - 1e-9), -2.0, 0.0),  # just inside the upper boundary
        (1.2 * (1 + 1e-9), 2.0, -2.4, 0.0, 1.0),  # just past it: clipped, no gradient
        (1.5, 2.0, -2.4, 0.0, 1.0),
        (0.5, 2.0, -1.0, -2.0, 0.0),  # A > 0 below the lower boundary: the pessimistic term is unclipped
        (0.8 * (1 + 1e-9), -2.0, 1.6 * (1 + 1e-9), 2.0, 0.0),  # A < 0 just inside the lower boundary
        (0.8 * (1 - 1e-9), -2.0, 1.6, 0.0, 1.0),  # just past it: clipped
        (2.0, -2.0, 4.0, 2.0, 0.0),  # A < 0 above the upper boundary: unclipped, below dual clip c = 3
        (3.0 * (1 + 1e-9), -2.0, 6.0, 0.0, 0.0),  # past c: dual clip caps the loss at -A c
    ],
)
def test_grpo_clipping_at_the_boundaries(ratio, adv, loss, dratio, clipped):
    got_loss, got_dratio, m = _one_token(ratio, adv, "grpo")
    assert got_loss == pytest.approx(loss, rel=1e-12)
    assert got_dratio == pytest.approx(dratio, rel=1e-9, abs=1e-12)
    assert m["clip_frac"] == clipped


def test_dual_clip_metric_and_disable():
    _, _, m = _one_token(5.0, -1.0, "grpo")
    assert m["dual_clip_frac"] == 1.0
    loss, dratio, _ = _one_token(5.0, -1.0, "grpo", clip_ratio_c=None)
    assert (loss, dratio) == (pytest.approx(5.0), pytest.approx(1.0))
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        _one_token(1.0, 1.0, "grpo", clip_ratio_c=0.5)


def test_dapo_clips_higher_than_grpo():
    assert _one_token(1.25, 1.0, "grpo")[1] == 0.0  # clipped at 1.2
    assert _one_token(1.25, 1.0, "dapo")[1] == pytest.approx(-1.0)  # clip-high 0.28 lets it through
    assert _one_token(1.3, 1.0, "dapo")[1] == 0.0
    assert _one_token(0.79, -1.0, "dapo")[1] == 0.0  # clip-low stays 0.2


def test_baseline_default_aggregations():
    lp, old, adv, mask = _batch(lengths=[6, 3, 1, 4])
    for name, mode in (("grpo", "seq-mean-token-mean"), ("dapo", "token-mean"), ("dr_grpo", "seq-mean-token-sum-norm")):
        default, _ = get_policy_loss(name)(lp, old, adv, mask)
        explicit, _ = get_policy_loss(name)(lp, old, adv, mask, loss_agg_mode=mode)
        assert default.item() == explicit.item()
