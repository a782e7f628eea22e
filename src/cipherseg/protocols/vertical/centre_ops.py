"""The compute centre's block computations for protocol 4.5, run by an executor.

Each task takes (state key, block indices, broadcast bytes) and returns bytes; the state —
the public context and the joined column blocks — is registered once per session and
inherited by forked workers (:mod:`cipherseg.engine`). Public key material only: this module
may not import key-holding code (import-linter contract).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cipherseg.engine.state import get_state
from cipherseg.protocols.vertical.session import TIE_TOLERANCE, pairs
from cipherseg.schemes.ckks import CkksPublicContext


@dataclass(slots=True)
class CentreState:
    """The centre's context and customer blocks (top level for k-means++, one lower for
    Lloyd), where block work runs."""

    ctx: CkksPublicContext
    x_top: list[list[Any]] = field(default_factory=list)
    x_low: list[list[Any]] = field(default_factory=list)


def _load_all(ctx: CkksPublicContext, blobs: Sequence[bytes]) -> list[Any]:
    return [ctx.ciphertext_from_bytes(b) for b in blobs]


def comparisons_task(args: tuple[str, list[int], tuple[bytes, ...], int, int, float, float]
                     ) -> list[list[bytes]]:
    """For each given block: r·(L_j − L_l − τ) for every pair j < l of the ``m`` centres,
    L_j = ‖c_j‖² − 2⟨x, c_j⟩ (linear in x), r log-uniform in [2^low, 2^high] per customer and
    pair, multiplied in at scale 1 before the rescale."""
    key, blocks, centre_bytes, m, seed, low_bits, high_bits = args
    state: CentreState = get_state(key)
    ctx = state.ctx
    d = len(state.x_low[0])
    cts = _load_all(ctx, centre_bytes)
    centres = [cts[j * d:(j + 1) * d] for j in range(m)]
    neg2 = [[ctx.multiply_integer(c, -2) for c in centre] for centre in centres]
    norms = []
    for centre in centres:
        acc = ctx.square(centre[0])
        for c in centre[1:]:
            acc = ctx.add(acc, ctx.square(c))
        norms.append(acc)
    rng = np.random.default_rng(seed)
    slots = ctx.params.slot_count
    tau = None
    out = []
    for b in blocks:
        row = state.x_low[b]
        lin = []
        for j in range(m):
            acc = norms[j]
            for f in range(d):
                acc = ctx.add(acc, ctx.multiply(neg2[j][f], row[f]))
            lin.append(ctx.relinearize(acc))
        values = []
        for j, other in pairs(m):
            diff = ctx.sub(lin[j], lin[other])
            if tau is None:
                tau = ctx.encode(TIE_TOLERANCE, scale=diff.scale, parms_id=diff.parms_id())
            ctx.evaluator.sub_plain_inplace(diff, tau)
            # The encoding error of r at scale 1 (|e| ≤ N/2 = 2^12 < 2^13) only perturbs the
            # factor, never its sign.
            factors = np.exp2(rng.uniform(low_bits, high_bits, slots))
            plain = ctx.encode(factors, scale=1.0, parms_id=diff.parms_id())
            ctx.evaluator.multiply_plain_inplace(diff, plain)
            values.append(ctx.ciphertext_to_bytes(ctx.rescale(diff)))
        out.append(values)
    return out


def sums_task(args: tuple[str, list[int], list[tuple[bytes, ...]]]) -> list[bytes]:
    """Partial Σ h_j·x_f over the given blocks, one per (cluster, feature), products added in
    three-component form and relinearised once (still one level below the top)."""
    key, blocks, hots_per_block = args
    state: CentreState = get_state(key)
    ctx = state.ctx
    acc: list[list[Any]] = []
    for b, hot_bytes in zip(blocks, hots_per_block, strict=True):
        row = state.x_low[b]
        for j, h in enumerate(_load_all(ctx, hot_bytes)):
            if len(acc) <= j:
                acc.append([ctx.multiply(h, x) for x in row])
            else:
                for f, x in enumerate(row):
                    ctx.add_inplace(acc[j][f], ctx.multiply(h, x))
    return [ctx.ciphertext_to_bytes(ctx.relinearize(s)) for cluster in acc for s in cluster]


def slot_sum_task(args: tuple[str, list[bytes]]) -> list[bytes]:
    """Sum over slots (rotations before the rescale, so their noise is divided too)."""
    key, blobs = args
    ctx = get_state(key).ctx
    return [ctx.ciphertext_to_bytes(ctx.rescale(ctx.sum_slots(ctx.ciphertext_from_bytes(b))))
            for b in blobs]


def distance_task(args: tuple[str, list[int], tuple[bytes, ...]]) -> list[bytes]:
    """‖x − c‖² for the given blocks (from the top level; the result is one level lower)."""
    key, blocks, centre_bytes = args
    state: CentreState = get_state(key)
    ctx = state.ctx
    centre = _load_all(ctx, centre_bytes)
    out = []
    for b in blocks:
        acc = None
        for x, c in zip(state.x_top[b], centre, strict=True):
            diff = ctx.sub(x, c)
            sq = ctx.square(diff)
            acc = sq if acc is None else ctx.add(acc, sq)
        out.append(ctx.ciphertext_to_bytes(ctx.rescale(ctx.relinearize(acc))))
    return out


def d2_task(args: tuple[str, list[tuple[bytes, ...]], list[tuple[bytes, ...]], list[int]]
            ) -> list[bytes]:
    """ρ·D²(x) per block: Σ_j h_j·‖x − c_j‖² (or ‖x − c_0‖² without one-hots)."""
    key, hots_per_block, distances_per_block, factors = args
    ctx = get_state(key).ctx
    out = []
    for hots, distances, factor in zip(hots_per_block, distances_per_block, factors,
                                       strict=True):
        dist = _load_all(ctx, distances)
        if not hots:
            d2 = dist[0]
        else:
            acc = None
            for h, e in zip(_load_all(ctx, hots), dist, strict=True):
                term = ctx.multiply(h, e)
                acc = term if acc is None else ctx.add(acc, term)
            d2 = ctx.rescale(ctx.relinearize(acc))
        out.append(ctx.ciphertext_to_bytes(ctx.multiply_integer(d2, factor)))
    return out
