"""Differential privacy for the aggregates protocol 4.2 releases: clipping, the Gaussian
mechanism with noise from the operating-system CSPRNG, and accounting with Google's
``dp-accounting`` library (Rényi-DP accountant), not hand-written formulas.

What is protected. A *record* is one customer of one data owner; neighbouring data sets add or
remove one record (``dp_accounting``'s ADD_OR_REMOVE_ONE relation). Each Lloyd iteration
releases per-cluster sums and counts. Every feature is clipped into public bounds
[lower, upper] and centred on the middle of the box, so one record changes the sums by a vector
of L2 norm at most C = ‖(upper − lower)/2‖₂ and one count by 1: the release
v = (sums / C, counts) has L2 sensitivity √2. Gaussian noise of standard deviation σ·√2 on
every coordinate of v (σ·√2·C on sums, σ·√2 on counts) is the Gaussian mechanism with noise
multiplier σ; ``releases`` iterations compose. :func:`calibrate_noise_multiplier` finds the
least σ meeting (ε, δ) for the planned number of releases.

Who adds the noise. **Each data owner adds the full noise to its own contribution before
encrypting it.** An owner's contribution is then already (ε, δ)-DP with respect to its own
customers; the aggregate, the fused centroids and everything computed from them are
post-processing. The guarantee needs no trust in the manager, the centre or the other owners,
and holds even if all of them collude. The price: the released aggregate carries n_owners
independent noise terms (standard deviation √n_owners · σ·√2·C on sums). The alternatives are
weaker: noise added by the manager after fusion leaves the exact aggregates with the manager;
noise split in shares (σ²/n per owner) loses its guarantee as soon as owners collude and
remove their own shares.

Caveats stated plainly: noise is sampled in floating point (Box–Muller on 53-bit CSPRNG
uniforms) and then rounded to the fixed-point grid of the protocol, which removes the
low-order bits Mironov's (2012) floating-point attack exploits but is not a proof against
it; the initial centres are data-independent in DP mode (k-means++ would release k records
exactly); the number of iterations is fixed in advance (the accountant charges all
``releases`` even if the run stops earlier).

>>> cfg = DPConfig(epsilon=1.0, delta=1e-6, releases=10, lower=(0.0, 0.0), upper=(2.0, 2.0))
>>> round(cfg.clip_norm, 4), round(cfg.noise_multiplier, 2)
(1.4142, 14.33)
>>> cfg.epsilon_spent() <= 1.0
True
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError
from cipherseg.schemes.rlwe_sampling import RandomSource

# L2 sensitivity of (sums / C, counts) when one record is added or removed.
SENSITIVITY = math.sqrt(2.0)


@functools.lru_cache(maxsize=256)
def calibrate_noise_multiplier(epsilon: float, delta: float, releases: int) -> float:
    """Least noise multiplier σ such that ``releases`` Gaussian mechanisms (sensitivity 1,
    noise σ) compose to (ε, δ)-DP under the RDP accountant of ``dp-accounting``.

    >>> round(calibrate_noise_multiplier(1.0, 1e-6, 1), 2)
    4.53
    """
    # dp_accounting takes about a second to import: only runs with DP pay it (every joint
    # party process imports this module)
    from dp_accounting import (
        GaussianDpEvent,
        LowerEndpointAndGuess,
        SelfComposedDpEvent,
        calibrate_dp_mechanism,
    )
    from dp_accounting.rdp import RdpAccountant

    _check_budget(epsilon, delta, releases)
    found = calibrate_dp_mechanism(
        RdpAccountant,
        lambda z: SelfComposedDpEvent(GaussianDpEvent(z), releases),
        epsilon,
        delta,
        bracket_interval=LowerEndpointAndGuess(1e-3, 2.0),
        tol=1e-4,
    )
    return float(found)


def epsilon_spent(noise_multiplier: float, releases: int, delta: float) -> float:
    """ε of ``releases`` composed Gaussian mechanisms with ``noise_multiplier`` at δ.

    >>> epsilon_spent(calibrate_noise_multiplier(0.5, 1e-6, 4), 4, 1e-6) <= 0.5
    True
    """
    if noise_multiplier <= 0 or releases < 1:
        raise ParameterError("need noise_multiplier > 0 and releases >= 1")
    from dp_accounting import GaussianDpEvent, SelfComposedDpEvent
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant()
    accountant.compose(SelfComposedDpEvent(GaussianDpEvent(noise_multiplier), releases))
    return float(accountant.get_epsilon(delta))


def _check_budget(epsilon: float, delta: float, releases: int) -> None:
    if not (0 < epsilon <= 100):
        raise ParameterError(f"epsilon must be in (0, 100], got {epsilon}")
    if not (0 < delta < 1e-2):
        raise ParameterError(f"delta must be in (0, 0.01), got {delta}")
    if not 1 <= releases <= 10_000:
        raise ParameterError(f"releases (iterations) must be in [1, 10000], got {releases}")


@dataclass(frozen=True, slots=True)
class DPConfig:
    """A differential-privacy budget for ``releases`` aggregate releases.

    Parameters
    ----------
    epsilon, delta:
        The (ε, δ) guarantee for the whole run, per record of each owner.
    releases:
        Number of releases the budget is split across (Lloyd iterations).
    lower, upper:
        Public per-feature bounds; records are clipped into them. Choose them from domain
        knowledge (e.g. recency 0–365 days), never from the private data.

    Examples
    --------
    >>> cfg = DPConfig(2.0, 1e-6, 5, lower=(0.0,), upper=(10.0,))
    >>> cfg.clip(np.array([[-3.0], [4.0], [12.0]])).ravel().tolist()
    [-5.0, -1.0, 5.0]
    """

    epsilon: float
    delta: float
    releases: int
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    def __post_init__(self) -> None:
        _check_budget(self.epsilon, self.delta, self.releases)
        lo = tuple(float(v) for v in self.lower)
        hi = tuple(float(v) for v in self.upper)
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)
        if not lo or len(lo) != len(hi):
            raise ParameterError("lower and upper bounds must be non-empty and of equal length")
        if not all(math.isfinite(a) and math.isfinite(b) and a < b for a, b in zip(lo, hi,
                                                                                strict=True)):
            raise ParameterError("every feature needs finite bounds with lower < upper")

    @property
    def n_features(self) -> int:
        return len(self.lower)

    @property
    def middle(self) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = (np.array(self.lower) + np.array(self.upper)) / 2.0
        return out

    @property
    def clip_norm(self) -> float:
        """C: the largest L2 norm of a clipped, centred record."""
        return float(np.linalg.norm((np.array(self.upper) - np.array(self.lower)) / 2.0))

    @property
    def noise_multiplier(self) -> float:
        """σ for the whole budget (calibrated once, cached)."""
        return calibrate_noise_multiplier(self.epsilon, self.delta, self.releases)

    @property
    def sum_noise_std(self) -> float:
        """Standard deviation of the noise one owner adds to each coordinate of its sums."""
        return self.noise_multiplier * SENSITIVITY * self.clip_norm

    @property
    def count_noise_std(self) -> float:
        """Standard deviation of the noise one owner adds to each of its counts."""
        return self.noise_multiplier * SENSITIVITY

    def epsilon_spent(self, releases: int | None = None) -> float:
        """ε actually composed after ``releases`` releases (default: all planned)."""
        return epsilon_spent(self.noise_multiplier, releases or self.releases, self.delta)

    def clip(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Clip records into the box and centre them on its middle (norm ≤ ``clip_norm``)."""
        clipped = np.clip(X, np.array(self.lower), np.array(self.upper))
        out: npt.NDArray[np.float64] = clipped - self.middle
        return out


def secure_normal(shape: tuple[int, ...], source: RandomSource | None = None
                  ) -> npt.NDArray[np.float64]:
    """Standard normal samples from a cryptographically secure source (Box–Muller on 53-bit
    uniforms from ``os.urandom`` unless another source is given, e.g. seeded for tests).

    >>> from cipherseg.schemes.rlwe_sampling import SeededRandomSource
    >>> x = secure_normal((20000,), SeededRandomSource(b"0123456789abcdef", b"doc"))
    >>> bool(abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05)
    True
    """
    count = int(np.prod(shape))
    pairs = (count + 1) // 2
    raw = (source.random_bytes(16 * pairs) if source is not None
           else os.urandom(16 * pairs))
    words = np.frombuffer(raw, dtype="<u8") >> np.uint64(11)
    uniforms = words.astype(np.float64) * 2.0**-53  # [0, 1)
    u1 = 1.0 - uniforms[:pairs]  # (0, 1]: log is finite
    u2 = uniforms[pairs:]
    radius = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
    out: npt.NDArray[np.float64] = z[:count].reshape(shape)
    return out


def gaussian_release(sums: npt.NDArray[np.float64], counts: npt.NDArray[np.float64],
                     config: DPConfig, source: RandomSource | None = None
                     ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """One owner's noisy (sums, counts) for one release: the Gaussian mechanism of
    ``config`` applied to sums of clipped, centred records.

    >>> cfg = DPConfig(1.0, 1e-6, 1, lower=(0.0,), upper=(1.0,))
    >>> s, c = gaussian_release(np.zeros((2, 1)), np.zeros(2), cfg)
    >>> s.shape, c.shape
    ((2, 1), (2,))
    """
    noise = secure_normal((sums.size + counts.size,), source)
    noisy_sums = sums + config.sum_noise_std * noise[:sums.size].reshape(sums.shape)
    noisy_counts = counts + config.count_noise_std * noise[sums.size:]
    return noisy_sums, noisy_counts


def data_independent_centres(k: int, lower: Sequence[float], upper: Sequence[float],
                             rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """k centres spread in the public box, independent of any data (DP mode): uniform draws
    inside the box shrunk by r, at least 2r apart, halving r until k fit (the sphere-packing
    initialisation of diffprivlib's KMeans)."""
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    radius = float(np.min(hi - lo)) / 2.0
    while radius > 1e-12:
        centres: list[npt.NDArray[np.float64]] = []
        retries = 0
        while len(centres) < k and retries < 100:
            candidate = lo + radius + rng.random(lo.size) * (hi - lo - 2 * radius)
            if all(np.linalg.norm(candidate - c) >= 2 * radius for c in centres):
                centres.append(candidate)
                retries = 0
            else:
                retries += 1
        if len(centres) == k:
            return np.array(centres)
        radius /= 2.0
    return lo + rng.random((k, lo.size)) * (hi - lo)
