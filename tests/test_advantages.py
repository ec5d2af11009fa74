import math

import pytest
import torch

from lad.advantages import ADVANTAGES, get_advantage

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)


def test_grpo_hand_computed():
    adv, m = get_advantage("grpo")(REWARDS)
    s1 = math.sqrt(1 / 3)  # unbiased std of (1, 0, 0, 1)
    s3 = math.sqrt(0.75 / 3)  # unbiased std of (0, 0, 0, 1)
    expected = torch.tensor(
        [
            [0.5 / (s1 + 1e-6), -0.5 / (s1 + 1e-6), -0.5 / (s1 + 1e-6), 0.5 / (s1 + 1e-6)],
            [0.0, 0.0, 0.0, 0.0],
            [-0.25 / (s3 + 1e-6)] * 3 + [0.75 / (s3 + 1e-6)],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(adv, expected, rtol=1e-12, atol=0)
    assert m["zero_adv_group_frac"] == pytest.approx(1 / 3)


def test_dr_grpo_hand_computed():
    adv, _ = get_advantage("dr_grpo")(REWARDS)
    expected = [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0], [-0.25, -0.25, -0.25, 0.75]]
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float64))


def test_rloo_hand_computed():
    adv, _ = get_advantage("rloo")(REWARDS)
    expected = [[2 / 3, -2 / 3, -2 / 3, 2 / 3], [0, 0, 0, 0], [-1 / 3, -1 / 3, -1 / 3, 1.0]]
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_equal_rewards_give_exact_zeros_and_are_counted(name):
    rewards = torch.tensor([[0.3, 0.3, 0.3], [0.7, 0.7, 0.7]], dtype=torch.float32)
    adv, m = get_advantage(name)(rewards)
    assert torch.equal(adv, torch.zeros_like(adv))
    assert m["zero_adv_group_frac"] == 1.0


def test_bad_shapes_and_names_are_named():
    with pytest.raises(ValueError, match=r"rewards must be \[P prompts, G responses\]; got shape \(4,\)"):
        get_advantage("grpo")(torch.ones(4))
    with pytest.raises(ValueError, match="group size G must be at least 2; got 1"):
        get_advantage("rloo")(torch.ones(3, 1))
    with pytest.raises(ValueError, match="unknown advantage estimator 'gae'"):
        get_advantage("gae")
