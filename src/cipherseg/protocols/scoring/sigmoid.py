"""Protocol 4.3's optional probabilities: the cubic sigmoid both parties agree on.

The owner fits it and sends its coefficients in the set-up; the centre evaluates it under
encryption (:func:`cipherseg.protocols.scoring.centre.cubic`), spending
:data:`SIGMOID_DEPTH` levels on top of the score's one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError
from cipherseg.schemes.ckks import CkksParams

SIGMOID_DEPTH = 2
"""Levels the degree-3 sigmoid polynomial needs on top of the score's one level."""


@dataclass(frozen=True, slots=True)
class SigmoidApproximation:
    """σ(x) ≈ 0.5 + c1·x + c3·x³, least squares on [-bound, bound].

    The error is documented by :attr:`max_error` (worst case on the interval, on a fine grid);
    outside the interval the cubic diverges, so scores beyond ±bound get meaningless
    probabilities (check :meth:`coverage` on your scores before relying on them).

    Examples
    --------
    >>> approx = SigmoidApproximation.fit(6.0)
    >>> round(approx.max_error, 3)
    0.082
    >>> float(np.round(approx(np.array([0.0]))[0], 6))
    0.5
    """

    bound: float
    c1: float
    c3: float
    max_error: float

    @classmethod
    def fit(cls, bound: float = 6.0) -> SigmoidApproximation:
        if not np.isfinite(bound) or bound <= 0:
            raise ParameterError(f"sigmoid bound must be a positive number, got {bound}")
        x = np.linspace(-bound, bound, 20001)
        target = 1.0 / (1.0 + np.exp(-x)) - 0.5
        basis = np.stack([x, x**3], axis=1)
        (c1, c3), *_ = np.linalg.lstsq(basis, target, rcond=None)
        err = float(np.max(np.abs(basis @ np.array([c1, c3]) - target)))
        return cls(float(bound), float(c1), float(c3), err)

    @property
    def coefficients(self) -> tuple[float, float, float, float]:
        """(c0, c1, c2, c3) of the polynomial."""
        return (0.5, self.c1, 0.0, self.c3)

    def __call__(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        v = np.asarray(x, dtype=np.float64)
        out: npt.NDArray[np.float64] = 0.5 + self.c1 * v + self.c3 * v**3
        return out

    def coverage(self, scores: npt.ArrayLike) -> float:
        """Fraction of ``scores`` inside [-bound, bound], where :attr:`max_error` holds."""
        s = np.asarray(scores, dtype=np.float64)
        return float(np.mean(np.abs(s) <= self.bound)) if s.size else 1.0


def sigmoid_params() -> CkksParams:
    """Depth-3 CKKS parameters for scoring with the sigmoid (N=8192, log q = 215 ≤ 218).

    Examples
    --------
    >>> sigmoid_params().depth
    3
    """
    return CkksParams(8192, (55, 35, 35, 35, 55), 35)
