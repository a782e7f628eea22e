"""The data owner's checks on what it decrypts in protocol 4.1.

Before the owner acts on a decrypted reply of the compute centre, it checks that a centre
following the protocol could have produced it, given what the owner knows anyway: its
features are normalised to |x| ≤ 1, the centres it encrypted, and the labels it assigned.

================ ==========================================================================
reply            refused when
================ ==========================================================================
scores           not finite, or some |δ_j − δ_0| exceeds (max‖x‖ + max‖c‖)² over the
                 owner's records and centres (a score is a difference of two squared
                 distances between a record and a centre)
counts           they differ from the number of records the owner itself assigned to each
                 cluster in this iteration
sums             not finite, or some |Σ x_f| of a cluster (cluster 0's follows from the
                 owner's totals) exceeds its count (|x_f| ≤ 1)
D², masked       not finite; masked record values beyond the mask's range ±(2^24 + 1)
initial centres  not finite, or outside [−1, 1] (k-means++ picks records)
================ ==========================================================================

What this buys, precisely: a faulty centre (a bug, another protocol version, ciphertexts
under another key or altered in transit, which CRC-32 does not stop) gives a clear
:class:`~cipherseg.errors.ProtocolError` instead of a wrong segmentation, and so does a crude
active one. It does **not** make 4.1 secure against an actively malicious centre: wrong values
inside these ranges pass (for example swapped scores of two records), and the owner still
acts on them (``docs/security.md``). The tolerances are far above CKKS noise (about 1e-7 per
value here) and far below the errors they are meant to catch.

>>> import numpy as np
>>> check_counts(np.array([3.0000002, 1.9999998]), np.array([0, 1, 1, 1, 2, 2]), 3)
array([3, 2])
>>> try:
...     check_counts(np.array([4.0, 1.0]), np.array([0, 1, 1, 1, 2, 2]), 3)
... except ProtocolError as exc:
...     print(str(exc)[:91])
the compute centre's counts for clusters 1..2 are [4.0, 1.0], but the owner assigned [3, 2]
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError, ProtocolError
from cipherseg.protocols.outsourced.messages import MASK_BITS

#: Absolute slack on bounds of values of order 1 (CKKS noise here is about 1e-7).
VALUE_SLACK = 1e-3

_BLAME = ("the centre did not follow protocol 4.1 or its replies were altered in transit; "
          "no result was returned")


def _refuse(what: str) -> ProtocolError:
    return ProtocolError(f"the compute centre's {what}: {_BLAME}")


def require_finite(values: npt.NDArray[np.float64], what: str) -> None:
    """Refuse decrypted ``what`` that are not all finite numbers."""
    if not np.all(np.isfinite(values)):
        raise _refuse(f"{what} are not finite numbers")


def check_features(X: npt.NDArray[np.float64]) -> None:
    """The owner's own precondition, which every bound below relies on."""
    peak = float(np.max(np.abs(X))) if X.size else 0.0
    if not math.isfinite(peak) or peak > 1.0:
        raise ParameterError(f"protocol 4.1 takes features normalised to |x| <= 1 (max |x| "
                             f"here: {peak:g}); EncryptedKMeans normalises them for you")


def score_bound(records_norm: float, centres_norm: float) -> float:
    """Largest |δ_j − δ_0| = |‖x − c_j‖² − ‖x − c_0‖²| for records of norm ≤ ``records_norm``
    and centres of norm ≤ ``centres_norm``."""
    return (records_norm + centres_norm) ** 2 + VALUE_SLACK


def check_scores(scores: npt.NDArray[np.float64], bound: float) -> None:
    """Score differences must be finite and within ``bound`` (:func:`score_bound`)."""
    require_finite(scores, "scores")
    peak = float(np.max(np.abs(scores))) if scores.size else 0.0
    if peak > bound:
        raise _refuse(f"scores reach {peak:.6g}, beyond {bound:.6g}, the largest difference of "
                      "squared distances between these records and centres")


def check_counts(counts: npt.NDArray[np.float64], labels: npt.NDArray[np.int64],
                 n_clusters: int) -> npt.NDArray[np.int64]:
    """Decrypted counts of clusters 1..k−1 against the owner's labels; the exact counts."""
    require_finite(counts, "counts")
    expected = np.bincount(labels, minlength=n_clusters)[1:]
    if counts.shape != expected.shape or np.any(np.abs(counts - expected) > 0.5):
        shown = [round(float(c), 3) for c in counts]
        raise _refuse(f"counts for clusters 1..{n_clusters - 1} are {shown}, but the owner "
                      f"assigned {expected.tolist()} records to them")
    exact: npt.NDArray[np.int64] = expected.astype(np.int64)
    return exact


def check_sums(sums: npt.NDArray[np.float64], counts: npt.NDArray[np.int64]) -> None:
    """Per-cluster feature sums (one row per cluster) within ±count (|x_f| ≤ 1)."""
    require_finite(sums, "sums")
    slack = VALUE_SLACK + 1e-6 * float(counts.sum())
    excess = np.abs(sums) - counts[:, None]
    if np.any(excess > slack):
        j, f = (int(v) for v in np.unravel_index(np.argmax(excess), excess.shape))
        raise _refuse(f"sum of feature {f} over cluster {j} is {float(sums[j, f]):.6g}, "
                      f"more in size than its {int(counts[j])} records of |x| <= 1 allow")


def check_masked_record(values: npt.NDArray[np.float64]) -> None:
    """A picked record under the centre's mask: finite and within ±(2^24 + 1)."""
    require_finite(values, "masked record values")
    limit = 2.0**MASK_BITS + 1.0 + VALUE_SLACK
    if values.size and float(np.max(np.abs(values))) > limit:
        raise _refuse(f"masked record values exceed the mask's range ±2^{MASK_BITS} + 1")


def check_initial_centres(centres: npt.NDArray[np.float64]) -> None:
    """k-means++ centres are the owner's records: finite and within [−1, 1]."""
    require_finite(centres, "initial centres")
    if centres.size and float(np.max(np.abs(centres))) > 1.0 + VALUE_SLACK:
        raise _refuse("initial centres lie outside [-1, 1], so they are not records of the "
                      "owner's normalised data")
