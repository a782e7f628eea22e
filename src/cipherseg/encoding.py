"""Fixed-point encoding of rationals as integers with one scale 10^n for all features.

A rational x becomes the integer m = round(x * 10^n). Every feature shares the same n, so
sums and linear maps of encoded values stay in one fixed-point system. Schemes over the
integers (vhe, threshold) encrypt m; CKKS encrypts the quantised rational m / 10^n, so every
scheme works on exactly the same plaintext numbers.

>>> import numpy as np
>>> enc = FixedPointEncoder(decimals=2)
>>> enc.encode(np.array([1.234, -0.5]))
array([123, -50])
>>> enc.decode(np.array([123, -50]))
array([ 1.23, -0.5 ])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cipherseg.errors import EncodingError, ParameterError

MAX_DECIMALS = 12
# Largest |m| we allow by default: keeps every int64 sum of up to 2^20 encoded values exact.
DEFAULT_MAX_ABS_INT = 2**42


@dataclass(frozen=True, slots=True)
class FixedPointEncoder:
    """Encode rationals as integers ``round(x * 10**decimals)``.

    Parameters
    ----------
    decimals:
        n in the scale 10^n (0..12). n=2 keeps two decimal places.
    max_abs_int:
        Largest absolute encoded integer accepted; schemes pass their plaintext bound here.

    Examples
    --------
    >>> import numpy as np
    >>> FixedPointEncoder(decimals=3).quantise(np.array([0.12345]))
    array([0.123])
    """

    decimals: int = 2
    max_abs_int: int = DEFAULT_MAX_ABS_INT

    def __post_init__(self) -> None:
        if not isinstance(self.decimals, (int, np.integer)) or isinstance(self.decimals, bool):
            raise ParameterError(f"decimals must be an integer, got {self.decimals!r}")
        if not 0 <= self.decimals <= MAX_DECIMALS:
            raise ParameterError(
                f"decimals must be between 0 and {MAX_DECIMALS}, got {self.decimals}"
            )
        if self.max_abs_int < 1 or self.max_abs_int > 2**62:
            raise ParameterError(f"max_abs_int must be in [1, 2^62], got {self.max_abs_int}")

    @property
    def scale(self) -> int:
        """The integer scale 10^n."""
        return int(10**self.decimals)

    @property
    def max_abs_value(self) -> float:
        """Largest absolute rational that encodes within ``max_abs_int``."""
        return self.max_abs_int / self.scale

    def encode(self, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Return ``round(values * 10^n)`` as int64, refusing NaN, inf and out-of-range values."""
        x = np.asarray(values, dtype=np.float64)
        self._check_finite(x)
        m = np.rint(x * self.scale)
        too_big = np.abs(m) > self.max_abs_int
        if too_big.any():
            worst = float(x.flat[int(np.argmax(np.abs(x)))])
            raise EncodingError(
                f"{int(too_big.sum())} value(s) exceed the plaintext range "
                f"|x| <= {self.max_abs_value:g} at 10^{self.decimals} "
                f"(largest: {worst:g}); standardise the features or lower `decimals`"
            )
        return m.astype(np.int64)

    def decode(self, encoded: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map encoded integers (or sums of them) back to rationals."""
        return np.asarray(encoded, dtype=np.float64) / self.scale

    def quantise(self, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The rationals the scheme will actually see: ``decode(encode(values))``."""
        return self.decode(self.encode(values))

    @staticmethod
    def _check_finite(x: npt.NDArray[np.float64]) -> None:
        bad = ~np.isfinite(x)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise EncodingError(
                f"{int(bad.sum())} value(s) are NaN or infinite (first at index {idx}); "
                "clean or impute the data before encrypting"
            )
