"""Two synthetic feature holders with a joint structure neither recovers alone (protocol 4.5).

Cluster j of the shared customers sits at group ``j // 2`` of the first holder's columns and
at group ``j % 2`` of the second's: the first holder alone sees pairs of clusters merged
(0 with 1, 2 with 3, …), the second sees the even and the odd clusters merged; only the joined
columns separate all of them. Each holder also has customers the other lacks, and each holder's
rows are in its own order, so the two are aligned by PSI, not by position.

>>> demo = make_vertical_demo(400, k=4, extra_fraction=0.2, seed=0)
>>> demo.X_a.shape, demo.X_b.shape, int((demo.truth_a >= 0).sum())
((480, 3), (480, 2), 400)
>>> len(set(demo.ids_a) & set(demo.ids_b))
400
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError


@dataclass(frozen=True)
class VerticalDemo:
    """Each holder's identifiers, columns and (for evaluation) true cluster of each row
    (−1: not shared)."""

    ids_a: list[str]
    X_a: npt.NDArray[np.float64]
    truth_a: npt.NDArray[np.int64]
    ids_b: list[str]
    X_b: npt.NDArray[np.float64]
    truth_b: npt.NDArray[np.int64]

    def joined(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64],
                              npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The shared customers' joined columns, true labels, and their rows at A and at B,
        in A's row order (evaluation only: no party holds this)."""
        index_b = {ident: i for i, ident in enumerate(self.ids_b)}
        rows_a = np.array([i for i, ident in enumerate(self.ids_a) if ident in index_b])
        rows_b = np.array([index_b[self.ids_a[i]] for i in rows_a])
        X = np.hstack([self.X_a[rows_a], self.X_b[rows_b]])
        return X, self.truth_a[rows_a], rows_a, rows_b


def _unit(rng: np.random.Generator, d: int) -> npt.NDArray[np.float64]:
    v = rng.normal(size=d)
    out: npt.NDArray[np.float64] = v / np.linalg.norm(v)
    return out


def make_vertical_demo(n_shared: int, *, k: int = 4, d_a: int = 3, d_b: int = 2,
                       extra_fraction: float = 0.2, spread: float = 0.6,
                       seed: int = 0) -> VerticalDemo:
    """``n_shared`` customers both holders know, plus ``extra_fraction`` more at each holder.

    Both holders' columns have comparable spreads (k-means weighs every column alike; real
    holders standardise their own columns first, a local per-column operation).
    """
    if n_shared < k or k < 2 or d_a < 1 or d_b < 1 or not 0 <= extra_fraction <= 10:
        raise ParameterError("need n_shared >= k >= 2, d_a, d_b >= 1, 0 <= extra_fraction")
    rng = np.random.default_rng(seed)
    groups_a = (k + 1) // 2
    # Groups 4 units apart along a random direction (with a little jitter): well separated.
    centres_a = np.outer(np.arange(groups_a) * 4.0, _unit(rng, d_a)) + rng.normal(0, .3, (
        groups_a, d_a))
    centres_b = np.outer(np.array([-2.0, 2.0]), _unit(rng, d_b)) + rng.normal(0, .3, (2, d_b))
    n_extra = round(n_shared * extra_fraction)
    numbers = rng.choice(10**8, size=n_shared + 2 * n_extra, replace=False)
    phones = [f"+86138{v:08d}" for v in numbers]

    def columns(truth: npt.NDArray[np.int64], centres: npt.NDArray[np.float64],
                groups: npt.NDArray[np.int64], unit: float) -> npt.NDArray[np.float64]:
        out = centres[groups] + rng.normal(0.0, spread, (truth.size, centres.shape[1]))
        result: npt.NDArray[np.float64] = out * unit
        return result

    truth = rng.integers(0, k, n_shared)
    extra_a = rng.integers(0, k, n_extra)
    extra_b = rng.integers(0, k, n_extra)
    t_a = np.concatenate([truth, extra_a])
    t_b = np.concatenate([truth, extra_b])
    X_a = columns(t_a, centres_a, t_a // 2, 1.0)
    X_b = columns(t_b, centres_b, t_b % 2, 1.0)
    ids_a = phones[:n_shared] + phones[n_shared:n_shared + n_extra]
    ids_b = phones[:n_shared] + phones[n_shared + n_extra:]
    label_a = np.concatenate([truth, np.full(n_extra, -1)])
    label_b = np.concatenate([truth, np.full(n_extra, -1)])
    perm_a, perm_b = rng.permutation(len(ids_a)), rng.permutation(len(ids_b))
    return VerticalDemo([ids_a[i] for i in perm_a], X_a[perm_a], label_a[perm_a],
                        [ids_b[i] for i in perm_b], X_b[perm_b], label_b[perm_b])
