"""Protocol 4.5 (vertical k-means): what every party shares — CKKS parameters, the blinding
range, tie and mask constants, the pair order, and the level and scale of every ciphertext the
manager decrypts.

>>> pairs(3)
[(0, 1), (0, 2), (1, 2)]
>>> BLIND_MIN_BITS, round(blind_max_bits(5), 2)
(13, 23.61)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.schemes.ckks import CkksParams
from cipherseg.schemes.rlwe_sampling import RandomSource

#: N = 8192; chain 60 | 50, 40 | 60 (210 bits ≤ 218: 128-bit HE standard); scale 2^40.
#: Uploads are fresh (top); Lloyd products are made one level lower and rescaled by the 50-bit
#: prime to 2^30, which leaves 29 bits of integer room at the last level for the blinding.
PARAMS = CkksParams(8192, (60, 50, 40, 60), 40)

#: Ties: ‖x−c_j‖² − ‖x−c_l‖² ≤ τ counts as "j is nearer" for j < l (features |x| ≤ 1; CKKS
#: error on a comparison is about 1e-8), so exact ties go to the lower index as numpy's argmin.
TIE_TOLERANCE = 1e-7

#: Blinding factors r are log-uniform in [2^13, 2^blind_max_bits(d)]. 2^13 exceeds N/2, the
#: largest error of encoding r at scale 1, so every effective factor stays positive.
BLIND_MIN_BITS = 13
#: |r·(P − τ)| must stay below 2^28 (one bit under the 29 of room); |P| ≤ 4d.
_ROOM_BITS = 28

#: k-means++ picks travel under a uniform mask of ±2^MASK_BITS (values |x| ≤ 1).
MASK_BITS = 24
#: D² is multiplied by one secret integer factor in [1, 2^D2_SCALE_BITS] per step.
D2_SCALE_BITS = 12


def blind_max_bits(n_features: int) -> float:
    """log2 of the largest blinding factor for ``n_features`` joined features (|P| ≤ 4d + τ)."""
    return _ROOM_BITS - math.log2(4 * n_features + 1)


def packed(clusters: range) -> list[tuple[int, int | None]]:
    """Lloyd one-hots travel two clusters per ciphertext, h_a + i·h_b in the complex slots
    (the centre's sums then come back packed the same way): the clusters of each ciphertext.

    >>> packed(range(1, 5)), packed(range(1, 4))
    ([(1, 2), (3, 4)], [(1, 2), (3, None)])
    """
    items = list(clusters)
    return [(items[i], items[i + 1] if i + 1 < len(items) else None)
            for i in range(0, len(items), 2)]


def pairs(m: int) -> list[tuple[int, int]]:
    """The pairs j < l of ``m`` clusters, in the order comparisons travel."""
    return [(j, other) for j in range(m) for other in range(j + 1, m)]




def data_primes(seal_context: Any) -> list[int]:
    """The data primes of the chain, first (decryption) prime first."""
    return [m.value() for m in seal_context.first_context_data().parms().coeff_modulus()]


def decrypted_shapes(seal_context: Any) -> dict[str, tuple[int, float]]:
    """(level, scale) of each kind of ciphertext the manager decrypts, as the honest centre's
    operations leave them (SEAL multiplies scales and divides by the dropped prime); level 0 is
    the top. The manager refuses anything else before decrypting it.

    * totals — slot sums of the uploads one prime lower: level 1, 2^40;
    * sums, comparisons — products of level-1 ciphertexts (2^80) rescaled by q1: level 2;
    * masked record — a top-level upload times a selector encoded at scale q2, rescaled: 2^40;
    * D² at the first k-means++ step — ‖x − c‖² from the top (2^80) rescaled by q2: level 1;
      later steps — one-hots (2^40) times those distances, rescaled by q1: level 2.
    """
    _, q1, q2 = data_primes(seal_context)
    scale = PARAMS.scale
    product = scale * scale
    distance = product / q2
    return {"totals": (1, scale), "sums": (2, product / q1), "comparisons": (2, product / q1),
            "masked record": (1, scale), "D² first": (1, distance),
            "D²": (2, scale * distance / q1)}


def uniform(source: RandomSource, low: float, high: float, size: int) -> npt.NDArray[np.float64]:
    """``size`` uniform doubles in [low, high) from 53 random bits each of ``source``."""
    words = np.frombuffer(source.random_bytes(8 * size), dtype="<u8") >> np.uint64(11)
    out: npt.NDArray[np.float64] = low + (high - low) * (words.astype(np.float64) * 2.0**-53)
    return out


def below(source: RandomSource, n: int) -> int:
    """A uniform integer in [0, n) (128 random bits reduced: bias below 2^-100 for n < 2^28)."""
    return int.from_bytes(source.random_bytes(16), "little") % n


def permutation(source: RandomSource, n: int) -> npt.NDArray[np.int64]:
    """A uniform permutation of range(n) (sorting 64-bit random keys)."""
    keys = np.frombuffer(source.random_bytes(8 * n), dtype="<u8")
    out: npt.NDArray[np.int64] = np.argsort(keys, kind="stable").astype(np.int64)
    return out
