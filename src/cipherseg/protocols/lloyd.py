"""Lloyd's centre update as scikit-learn performs it, for the protocols' key holders.

>>> import numpy as np
>>> X = np.array([[0.0], [0.1], [0.2], [1.0]])
>>> labels = np.array([0, 0, 0, 0])          # nobody chose centre 1: it takes the record
>>> update_centres(X, labels, np.array([[0.3], [9.0]]),   # farthest from its centre, 1.0
...                np.array([[1.3], [0.0]]), np.array([4, 0])).ravel().round(6).tolist()
[0.1, 1.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def update_centres(X: npt.NDArray[Any], labels: npt.NDArray[np.int64],
                   centres_old: npt.NDArray[np.float64], sums: npt.NDArray[Any],
                   counts: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Per-cluster ``sums / counts``, with empty clusters relocated as scikit-learn does.

    As ``sklearn.cluster._k_means_common`` (1.8): the m empty clusters take the m records
    farthest from their current centres (one each, in ``argpartition`` order); such a record
    leaves its cluster's sum and count but keeps its label until the next assignment. Nothing
    moves when every record sits on its centre (more clusters than distinct records). A
    cluster still empty afterwards (its only record moved) is put on the largest cluster's
    centre. (scikit-learn copies that centre before averaging it when the largest cluster has
    the higher index — an unaveraged sum of its centred data; that quirk is not reproduced.)
    """
    sums_f = np.asarray(sums, dtype=np.float64).copy()
    weights = np.asarray(counts, dtype=np.float64).copy()
    empty = np.where(weights == 0)[0]
    if empty.size:
        dist = np.asarray(((X - centres_old[labels]) ** 2).sum(axis=1), dtype=np.float64)
        far = np.argpartition(dist, -empty.size)[:-empty.size - 1:-1]
        if dist.max() > 0:
            for new_id, far_idx in zip(empty, far, strict=True):
                old_id = int(labels[far_idx])
                record = np.asarray(X[far_idx], dtype=np.float64)
                sums_f[old_id] -= record
                sums_f[new_id] = record
                weights[new_id] = 1.0
                weights[old_id] -= 1.0
    out: npt.NDArray[np.float64] = sums_f / np.maximum(weights, 1.0)[:, None]
    out[weights == 0] = out[int(np.argmax(weights))]
    return out
