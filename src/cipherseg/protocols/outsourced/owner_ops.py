"""The data owner's block computations for protocol 4.1 (decrypt, argmin, re-encrypt).

These run on the key holder's side — in its process or its own worker processes — and look
up the owner's :class:`~cipherseg.schemes.ckks_keys.CkksSecretContext` by key.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from cipherseg.engine.state import get_state
from cipherseg.protocols.outsourced.owner_checks import check_scores
from cipherseg.schemes.ckks_keys import CkksSecretContext

TIE_TOLERANCE = 1e-7
"""Score differences below this (features normalised to |x| <= 1) count as ties."""


def assign_task(args: tuple[str, list[tuple[bytes, ...]], list[int], bool, float]
                ) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], list[bytes]]]:
    """Per block: labels, the chosen score ``min(0, s_1..s_{k-1})``, and (optionally) the
    encrypted one-hots for clusters 1..k-1 (zero in padding slots). Scores beyond
    ``bound`` (:func:`~cipherseg.protocols.outsourced.owner_checks.score_bound`) are refused."""
    key, scores_per_block, sizes, with_onehots, bound = args
    owner: CkksSecretContext = get_state(key)
    out = []
    for scores, size in zip(scores_per_block, sizes, strict=True):
        if scores:
            s = np.vstack([owner.decrypt_bytes(b, size) for b in scores])
            check_scores(s, bound)
            full = np.vstack([np.zeros((1, size)), s])
            # Ties (equal distances, common on fixed-point data) go to the lowest cluster
            # index, as numpy's argmin on exact distances; CKKS noise (~1e-8 here) would
            # otherwise break them at random. (scikit-learn breaks them by float rounding.)
            near_min = full <= full.min(axis=0) + TIE_TOLERANCE
            labels = np.argmax(near_min, axis=0).astype(np.int64)
            chosen = full[labels, np.arange(size)]
        else:
            labels = np.zeros(size, dtype=np.int64)
            chosen = np.zeros(size)
        onehots: list[bytes] = []
        if with_onehots:
            for j in range(1, len(scores) + 1):
                onehots.append(owner.encrypt_to_bytes((labels == j).astype(np.float64)))
        out.append((labels, chosen, onehots))
    return out


def min_scores_task(args: tuple[str, list[tuple[bytes, ...]], list[int], float]
                    ) -> list[bytes]:
    """Per block: enc(min(0, s_1..s_m)) at the last level, at the centre's rescaled scale.
    Scores beyond ``bound`` are refused."""
    key, scores_per_block, sizes, bound = args
    owner: CkksSecretContext = get_state(key)
    out = []
    for scores, size in zip(scores_per_block, sizes, strict=True):
        s = np.vstack([owner.decrypt_bytes(b, size) for b in scores])
        check_scores(s, bound)
        low = np.minimum(0.0, s.min(axis=0))
        out.append(owner.encrypt_to_bytes(low, at_last_level=True, scale=owner.rescaled_scale))
    return out


def decrypt_task(args: tuple[str, list[bytes], list[int]]) -> list[npt.NDArray[np.float64]]:
    """Decrypt one ciphertext per block, keeping the first ``size`` slots of each."""
    key, blobs, sizes = args
    owner: CkksSecretContext = get_state(key)
    return [owner.decrypt_bytes(b, n) for b, n in zip(blobs, sizes, strict=True)]


def encrypt_task(args: tuple[str, list[npt.NDArray[np.float64]]]) -> list[bytes]:
    """Encrypt (seeded, top level) one vector per item."""
    key, vectors = args
    owner: CkksSecretContext = get_state(key)
    return [owner.encrypt_to_bytes(v) for v in vectors]
