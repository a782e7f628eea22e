"""Protocol 4.5 (vertical k-means): what every party shares — CKKS parameters, the blinding
range, tie and mask constants, the pair order.

>>> pairs(3)
[(0, 1), (0, 2), (1, 2)]
>>> BLIND_MIN_BITS, round(blind_max_bits(5), 2)
(13, 23.61)
"""

from __future__ import annotations

import math

from cipherseg.protocols.messages import Message
from cipherseg.schemes.ckks import CkksParams

Outgoing = list[tuple[str, Message]]

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


def pairs(m: int) -> list[tuple[int, int]]:
    """The pairs j < l of ``m`` clusters, in the order comparisons travel."""
    return [(j, other) for j in range(m) for other in range(j + 1, m)]


