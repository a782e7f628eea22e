"""Lift of a campaign: treated against holdout, with 95 % confidence intervals and optional
differential privacy.

A campaign holds out a random share of each segment's sendable customers
(:mod:`cipherseg.messaging.holdout`). After a measurement window the data owner's
transactions give, per customer, whether they bought (conversion) and how much they spent.
Because the split is random, the difference between the groups estimates the campaign's
effect on its audience (intention to treat: a treated customer counts whether or not the
message reached them).

**Estimators.** Conversion rates p̂ = converters / n per group; the lift is p̂_T − p̂_H
(percentage points) with the unpooled Wald interval
``(p̂_T − p̂_H) ± 1.96 · √(p̂_T(1−p̂_T)/n_T + p̂_H(1−p̂_H)/n_H)``. Spend per customer (zero
for a customer who bought nothing) is compared the same way with Welch's standard error
``√(s²_T/n_T + s²_H/n_H)``. Both are large-sample intervals; the platform reports a group
only if it has at least the minimum segment size, where the normal approximation is
adequate (the tests check coverage by simulation: ≥ 90 of 100 planted-effect seeds).

**Differential privacy (optional).** Each customer is in exactly one group of one segment,
so the groups are disjoint and their releases compose in parallel. Per group the release is
(n, converters, Σ spend, Σ spend²) with spend clipped to ``spend_cap``; n is already public
(the campaign report shows how many were sent and held out), the other three get Laplace
noise of scale 3/ε, 3·cap/ε and 3·cap²/ε (sensitivities 1, cap and cap² when one customer
is added or removed), so the whole lift report is ε-differentially private for the
customers in it. The noise variance (2·scale²) is added to the interval's variance, so the
interval stays honest about the extra uncertainty. Noise comes from the operating system's
random source; a release is drawn once and kept (drawing again on every page view would
let repeated views average the noise away).

>>> import numpy as np
>>> t = ArmOutcome.from_spend(np.array([0, 0, 10.0, 20.0] * 250))   # 50 % convert
>>> h = ArmOutcome.from_spend(np.array([0, 0, 0, 10.0] * 100))      # 25 % convert
>>> r = estimate_lift(t, h)
>>> round(r.conversion_lift.estimate, 3), r.conversion_lift.low < 0.25 < r.conversion_lift.high
(0.25, True)
>>> round(r.spend_treated, 2), round(r.spend_holdout, 2)
(7.5, 2.5)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError

Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class ArmOutcome:
    """What one group of one segment did in the window (noisy sums after a DP release)."""

    n: int
    converters: float
    spend: float
    spend_sq: float

    @classmethod
    def from_spend(cls, spend: npt.ArrayLike, *, cap: float | None = None) -> ArmOutcome:
        """From each customer's spend in the window (0: bought nothing), clipped to
        ``cap`` if given."""
        x = np.asarray(spend, dtype=float)
        if cap is not None:
            x = np.minimum(x, cap)
        return cls(int(x.size), float(np.count_nonzero(x > 0)), float(x.sum()),
                   float(np.square(x).sum()))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmOutcome:
        return cls(int(data["n"]), float(data["converters"]), float(data["spend"]),
                   float(data["spend_sq"]))


@dataclass(frozen=True, slots=True)
class Interval:
    """An estimate with its 95 % confidence interval."""

    estimate: float
    low: float
    high: float

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True, slots=True)
class LiftResult:
    """Treated against holdout for one segment."""

    treated: ArmOutcome
    holdout: ArmOutcome
    conversion_treated: float
    conversion_holdout: float
    conversion_lift: Interval
    spend_treated: float
    spend_holdout: float
    spend_lift: Interval
    epsilon: float | None = None

    @property
    def relative_lift(self) -> float | None:
        """Conversion lift as a share of the holdout's rate (``None`` if that is 0)."""
        if self.conversion_holdout <= 0:
            return None
        return self.conversion_lift.estimate / self.conversion_holdout


@dataclass(frozen=True, slots=True)
class NoiseVariance:
    """Variance of the noise added to a group's converters, spend and spend² sums."""

    converters: float = 0.0
    spend: float = 0.0


def _rate(arm: ArmOutcome) -> float:
    return min(max(arm.converters / arm.n, 0.0), 1.0)


def _spend_var(arm: ArmOutcome) -> float:
    """Sample variance of per-customer spend (never negative, also after noise)."""
    mean = arm.spend / arm.n
    return max((arm.spend_sq - arm.n * mean * mean) / max(arm.n - 1, 1), 0.0)


def estimate_lift(treated: ArmOutcome, holdout: ArmOutcome, *,
                  noise: NoiseVariance | None = None, epsilon: float | None = None,
                  z: float = Z95) -> LiftResult:
    """Conversion and spend lift with Wald/Welch intervals (module docstring); ``noise``
    is the variance of DP noise in each group's sums, added to the interval."""
    if treated.n < 2 or holdout.n < 2:
        raise ParameterError("each group needs at least two customers")
    noise = noise or NoiseVariance()
    pt, ph = _rate(treated), _rate(holdout)
    var_conv = (pt * (1 - pt) / treated.n + ph * (1 - ph) / holdout.n
                + noise.converters / treated.n ** 2 + noise.converters / holdout.n ** 2)
    d = pt - ph
    half = z * math.sqrt(var_conv)
    mt, mh = treated.spend / treated.n, holdout.spend / holdout.n
    var_spend = (_spend_var(treated) / treated.n + _spend_var(holdout) / holdout.n
                 + noise.spend / treated.n ** 2 + noise.spend / holdout.n ** 2)
    sd = mt - mh
    half_s = z * math.sqrt(var_spend)
    return LiftResult(treated, holdout, pt, ph, Interval(d, d - half, d + half), mt, mh,
                      Interval(sd, sd - half_s, sd + half_s), epsilon)


def laplace(scale: float, uniform: Callable[[], float]) -> float:
    """One Laplace(0, scale) draw by inversion from a uniform in [0, 1).

    >>> abs(laplace(1.0, lambda: 0.5)), round(laplace(1.0, lambda: 0.75), 4)
    (0.0, 0.6931)
    """
    u = uniform() - 0.5
    return -scale * math.copysign(1.0, u) * math.log(max(1.0 - 2.0 * abs(u), 1e-300))


def dp_release(arm: ArmOutcome, *, epsilon: float, spend_cap: float,
               uniform: Callable[[], float] | None = None) -> ArmOutcome:
    """The group's sums with Laplace noise for ε-DP (module docstring); ``arm`` must have
    been built with ``cap=spend_cap``. ``uniform`` defaults to the OS random source."""
    if not (0 < epsilon <= 100) or spend_cap <= 0:
        raise ParameterError("need 0 < epsilon <= 100 and a positive spend cap")
    draw = uniform or random.SystemRandom().random
    scales = noise_scales(epsilon, spend_cap)
    return ArmOutcome(arm.n, arm.converters + laplace(scales[0], draw),
                      arm.spend + laplace(scales[1], draw),
                      arm.spend_sq + laplace(scales[2], draw))


def noise_scales(epsilon: float, spend_cap: float) -> tuple[float, float, float]:
    """Laplace scales for converters, spend and spend² (ε split in three)."""
    return 3.0 / epsilon, 3.0 * spend_cap / epsilon, 3.0 * spend_cap ** 2 / epsilon


def dp_noise_variance(epsilon: float, spend_cap: float) -> NoiseVariance:
    """The variance of the noise :func:`dp_release` adds (2·scale² per Laplace draw)."""
    conv, spend, _sq = noise_scales(epsilon, spend_cap)
    return NoiseVariance(2 * conv ** 2, 2 * spend ** 2)
