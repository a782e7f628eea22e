"""DP mechanism and accounting: calibration against dp-accounting, clipping, noise widths."""

from __future__ import annotations

import numpy as np
import pytest
from dp_accounting import GaussianDpEvent, SelfComposedDpEvent
from dp_accounting.rdp import RdpAccountant
from scipy import stats

from cipherseg.errors import ParameterError
from cipherseg.protocols.dp import (
    DPConfig,
    calibrate_noise_multiplier,
    epsilon_spent,
    gaussian_release,
    secure_normal,
)
from cipherseg.schemes.rlwe_sampling import SeededRandomSource

SOURCE_SEED = b"cipherseg dp tests 0123456789"


@pytest.mark.parametrize(("epsilon", "releases"), [(0.1, 1), (1.0, 10), (8.0, 30)])
def test_calibration_meets_the_budget_tightly(epsilon: float, releases: int) -> None:
    z = calibrate_noise_multiplier(epsilon, 1e-6, releases)
    accountant = RdpAccountant()
    accountant.compose(SelfComposedDpEvent(GaussianDpEvent(z), releases))
    spent = accountant.get_epsilon(1e-6)
    assert spent <= epsilon * (1 + 1e-6)
    assert spent >= 0.97 * epsilon  # not wastefully noisy
    assert epsilon_spent(z, releases, 1e-6) == pytest.approx(spent)


def test_more_privacy_or_more_releases_need_more_noise() -> None:
    assert calibrate_noise_multiplier(0.5, 1e-6, 10) > calibrate_noise_multiplier(1.0, 1e-6, 10)
    assert calibrate_noise_multiplier(1.0, 1e-6, 20) > calibrate_noise_multiplier(1.0, 1e-6, 10)


def test_clipping_bounds_every_record_norm() -> None:
    cfg = DPConfig(1.0, 1e-6, 5, lower=(0.0, -5.0, 10.0), upper=(365.0, 5.0, 1000.0))
    X = np.random.default_rng(0).normal(0, 1000, size=(5000, 3))
    clipped = cfg.clip(X)
    assert np.linalg.norm(clipped, axis=1).max() <= cfg.clip_norm + 1e-9
    assert cfg.sum_noise_std == pytest.approx(cfg.noise_multiplier * np.sqrt(2) * cfg.clip_norm)
    assert cfg.count_noise_std == pytest.approx(cfg.noise_multiplier * np.sqrt(2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"delta": 0.5}, "delta"),
        ({"releases": 0}, "releases"),
        ({"lower": (1.0,), "upper": (0.0,)}, "lower < upper"),
        ({"lower": (0.0, 0.0), "upper": (1.0,)}, "equal length"),
    ],
)
def test_bad_budgets_are_refused(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"epsilon": 1.0, "delta": 1e-6, "releases": 3,
                               "lower": (0.0,), "upper": (1.0,)}
    base.update(kwargs)
    with pytest.raises(ParameterError, match=match):
        DPConfig(**base)  # type: ignore[arg-type]


def test_secure_normal_is_standard_normal() -> None:
    x = secure_normal((50000,), SeededRandomSource(SOURCE_SEED, b"n"))
    assert stats.kstest(x, "norm").pvalue > 1e-3
    fresh = secure_normal((4,))
    assert fresh.shape == (4,) and np.isfinite(fresh).all()
    assert not np.array_equal(secure_normal((8,)), secure_normal((8,)))


def test_gaussian_release_adds_the_configured_widths() -> None:
    cfg = DPConfig(1.0, 1e-6, 4, lower=(0.0, 0.0), upper=(10.0, 20.0))
    source = SeededRandomSource(SOURCE_SEED, b"release")
    sums = np.zeros((20000, 2))
    counts = np.zeros(20000)
    noisy_sums, noisy_counts = gaussian_release(sums, counts, cfg, source)
    assert noisy_sums.std() == pytest.approx(cfg.sum_noise_std, rel=0.03)
    assert noisy_counts.std() == pytest.approx(cfg.count_noise_std, rel=0.03)
