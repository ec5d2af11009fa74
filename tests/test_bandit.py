import json

import pytest
import torch
from typer.testing import CliRunner

from lad.bandit import (
    BanditConfig,
    advantage_landscape,
    kl_divergence,
    modes_recovered,
    run_bandit,
    target_policy,
    total_variation,
)
from lad.cli import app


def test_metric_functions_hand_computed():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    assert total_variation(p, q) == pytest.approx(0.5)
    assert kl_divergence(p, q) == pytest.approx(2 * 0.5 * torch.log(torch.tensor(2.0)).item())
    policy = torch.tensor([0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.7])
    target = torch.tensor([0.1, 0.4, 0.1, 0.0, 0.0, 0.2, 0.2])
    # window 1 around arm 1 holds 0.3 of the policy vs 0.6 of the target (= half): recovered;
    # around arm 5 it holds 0.7 vs 0.4: recovered; around arm 3 0.0 vs 0.3: not.
    assert modes_recovered(policy, target, [1, 5, 3], window=1) == 2


def test_landscape_has_three_unequal_modes():
    cfg = BanditConfig()
    adv = advantage_landscape(cfg)
    assert adv.shape == (50,)
    peaks = [i for i in range(1, 49) if adv[i] > adv[i - 1] and adv[i] > adv[i + 1]]
    assert peaks == [10, 25, 40]
    assert len({round(float(adv[i]), 6) for i in peaks}) == 3
    assert target_policy(adv, 4.0).sum().item() == pytest.approx(1.0)


def test_paper_outcome_lad_keeps_every_mode_grpo_collapses():
    result = run_bandit(BanditConfig(divergences=["js", "hd"]))
    for name in ("lad-js", "lad-hd"):
        assert result["methods"][name]["tv"] <= 0.05
        assert result["methods"][name]["modes_recovered"] == 3
    assert result["methods"]["grpo"]["max_prob"] >= 0.9
    assert result["methods"]["grpo"]["modes_recovered"] <= 1


def test_sampled_estimator_is_reproducible_from_its_config():
    cfg = BanditConfig(steps=60, divergences=["js"], lad_estimator="sampled", seed=7)
    a, b = run_bandit(cfg), run_bandit(cfg)
    assert a["policies"] == b["policies"]
    c = run_bandit(cfg.model_copy(update={"seed": 8}))
    assert c["policies"]["lad-js"] != a["policies"]["lad-js"]


def test_cli_writes_table_json_and_plot(tmp_path):
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    res = CliRunner().invoke(app, ["bandit", "--steps", "100", "--json", str(out_json), "--plot", str(out_png)])
    assert res.exit_code == 0, res.output
    assert "lad-js" in res.output and "grpo" in res.output
    data = json.loads(out_json.read_text())
    assert set(data["methods"]) == {"lad-js", "lad-hd", "lad-tv", "lad-kl", "lad-rkl", "lad-jf", "lad-ps", "grpo", "pg"}
    assert set(data["methods"]["lad-js"]) == {"tv", "kl", "entropy", "max_prob", "modes_recovered"}
    assert len(data["target"]) == 50 and data["config"]["steps"] == 100
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_names_a_bad_option():
    res = CliRunner().invoke(app, ["bandit", "--estimator", "mc"])
    assert res.exit_code == 2
    assert "lad_estimator" in res.output and "'exact' or 'sampled'" in res.output
    assert "Traceback" not in res.output
