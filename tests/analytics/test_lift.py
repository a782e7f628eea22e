"""Lift measurement against planted truth: the holdout draw the campaigns use, synthetic
purchases with a known effect, 100 seeds; the 95 % intervals must cover the truth in at
least 90 of them (and cover 0 as often when nothing was planted), with and without
differential-privacy noise."""

from __future__ import annotations

import functools
import random

import numpy as np
import pytest

from cipherseg.analytics.lift import (
    ArmOutcome,
    dp_noise_variance,
    dp_release,
    estimate_lift,
    laplace,
)
from cipherseg.errors import ParameterError
from cipherseg.messaging.holdout import HoldoutPlan

N_CUSTOMERS = 5000
BASE_RATE = 0.20
MEAN_BASKET = 100.0          # gamma(2, 50): the mean spend of a converting customer
SEEDS = range(100)


@functools.cache
def _held(seed: int) -> np.ndarray:
    """Who is held out in seed ``seed``'s campaign: drawn exactly as the platform draws it
    (computed once per seed, shared by the tests)."""
    plan = HoldoutPlan(0.1, f"{seed:032x}")
    return np.array([plan.arm("7:0", str(i)) == "holdout" for i in range(N_CUSTOMERS)])


def _campaign(seed: int, effect: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer spend in the window for the treated and the held-out customers of one
    synthetic segment."""
    rng = np.random.default_rng(seed)
    held = _held(seed)
    rate = np.where(held, BASE_RATE, BASE_RATE + effect)
    converts = rng.random(N_CUSTOMERS) < rate
    spend = np.where(converts, rng.gamma(2.0, MEAN_BASKET / 2, N_CUSTOMERS), 0.0)
    return spend[~held], spend[held]


@pytest.mark.parametrize("effect", [0.05, 0.0])
def test_intervals_cover_the_planted_effect(effect: float) -> None:
    conv_hits = spend_hits = 0
    for seed in SEEDS:
        treated, holdout = _campaign(seed, effect)
        assert 380 < holdout.size < 620          # 10 % of 5000, drawn
        r = estimate_lift(ArmOutcome.from_spend(treated), ArmOutcome.from_spend(holdout))
        conv_hits += r.conversion_lift.covers(effect)
        spend_hits += r.spend_lift.covers(effect * MEAN_BASKET)
    assert conv_hits >= 90, conv_hits
    assert spend_hits >= 90, spend_hits


@pytest.mark.parametrize("effect", [0.05, 0.0])
def test_dp_intervals_still_cover_the_truth(effect: float) -> None:
    epsilon, cap = 1.0, 500.0
    draws = random.Random(1)                 # reproducible noise for the test
    hits = 0
    widths, plain_widths = [], []
    for seed in SEEDS:
        treated, holdout = _campaign(seed, effect)
        plain = estimate_lift(ArmOutcome.from_spend(treated), ArmOutcome.from_spend(holdout))
        plain_widths.append(plain.spend_lift.high - plain.spend_lift.low)
        t = dp_release(ArmOutcome.from_spend(treated, cap=cap), epsilon=epsilon,
                       spend_cap=cap, uniform=draws.random)
        h = dp_release(ArmOutcome.from_spend(holdout, cap=cap), epsilon=epsilon,
                       spend_cap=cap, uniform=draws.random)
        r = estimate_lift(t, h, noise=dp_noise_variance(epsilon, cap), epsilon=epsilon)
        hits += r.conversion_lift.covers(effect)
        widths.append(r.spend_lift.high - r.spend_lift.low)
    assert hits >= 90, hits
    # The spend interval widens by the noise (its SD is ≈ 4.2 per customer at ε = 1, cap
    # 500, with ≈ 500 held out) instead of pretending to the precision of exact sums.
    assert np.median(widths) > 1.5 * np.median(plain_widths)


def test_a_clear_effect_is_detected() -> None:
    treated, holdout = _campaign(3, 0.10)
    r = estimate_lift(ArmOutcome.from_spend(treated), ArmOutcome.from_spend(holdout))
    assert r.conversion_lift.low > 0 and r.relative_lift is not None and r.relative_lift > 0.2


def test_laplace_noise_has_the_stated_scale() -> None:
    draws = random.Random(5)
    x = np.array([laplace(3.0, draws.random) for _ in range(20000)])
    assert abs(x.mean()) < 0.1 and 2 * 9 * 0.95 < x.var() < 2 * 9 * 1.05


def test_refuses_empty_groups_and_bad_budgets() -> None:
    one = ArmOutcome.from_spend([5.0])
    with pytest.raises(ParameterError):
        estimate_lift(one, ArmOutcome.from_spend([0.0, 1.0]))
    with pytest.raises(ParameterError):
        dp_release(one, epsilon=0.0, spend_cap=10)
