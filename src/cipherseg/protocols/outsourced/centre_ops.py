"""The compute centre's block computations for the outsourced k-means (protocol 4.1).

Everything here works on ciphertexts under a :class:`~cipherseg.schemes.ckks.CkksPublicContext`
and cannot decrypt (this module may not import the key holder's code: import-linter contract).

Data layout: customers are split into blocks of ``slot_count`` (4096) customers; a block is
one ciphertext per feature (column packing), slot ``s`` of every feature ciphertext holding
the same customer. Centroids arrive as one ciphertext per (cluster, feature) with the value
in every slot.

Scores. For clusters j = 1..k-1 the centre computes, per block,
``s_j = δ_j − δ_0`` with ``δ_j = ‖c_j‖² − 2⟨c_j, x⟩``, i.e.
``s_j = Σ_f 2(c_0f − c_jf)·x_f + Σ_f (c_jf² − c_0f²)``: all products of two fresh ciphertexts,
added in three-component form, relinearised and rescaled once per (block, cluster).
(Relinearising after the rescale is a third cheaper but adds ~1e-6 of key-switching noise,
100× more than this order; near-tie labels then flip against scikit-learn.) The
owner's argmin over ``(0, s_1, …, s_{k-1})`` equals the argmin of the squared distances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.engine.state import get_state
from cipherseg.schemes.ckks import CkksPublicContext


@dataclass(slots=True)
class CentreData:
    """What the centre keeps for one session where block work runs: its public context and
    the customer blocks held there (all of them, or one executor shard), by block index."""

    ctx: CkksPublicContext
    blocks: dict[int, list[Any]]
    n_features: int


def build_centre_data(public_context: bytes, blocks: Mapping[int, Sequence[bytes]]
                      ) -> CentreData:
    """Executor builder (see :meth:`cipherseg.engine.base.Executor.put_blocks`): load the public
    context and the given blocks' feature ciphertexts; bad bytes raise ``CiphertextError``."""
    ctx = CkksPublicContext.from_bytes(public_context)
    loaded = {int(b): [ctx.ciphertext_from_bytes(x) for x in feats] for b, feats in blocks.items()}
    n_features = len(next(iter(loaded.values()))) if loaded else 0
    return CentreData(ctx, loaded, n_features)


def centroid_terms(ctx: CkksPublicContext, centroids: Sequence[Sequence[Any]]
                   ) -> tuple[list[list[Any]], list[Any]]:
    """Per cluster j ≥ 1: the weights 2(c_0 − c_j) per feature and the 3-component ‖c_j‖²−‖c_0‖²."""
    c0 = centroids[0]
    norm0 = None
    for f in range(len(c0)):
        term = ctx.square(c0[f])
        norm0 = term if norm0 is None else ctx.add(norm0, term)
    weights: list[list[Any]] = []
    norms: list[Any] = []
    for cj in centroids[1:]:
        row = []
        norm = None
        for f in range(len(c0)):
            diff = ctx.sub(c0[f], cj[f])
            row.append(ctx.add(diff, diff))
            term = ctx.square(cj[f])
            norm = term if norm is None else ctx.add(norm, term)
        weights.append(row)
        norms.append(ctx.sub(norm, norm0))
    return weights, norms


def block_scores(ctx: CkksPublicContext, block: Sequence[Any], weights: list[list[Any]],
                 norms: list[Any]) -> list[Any]:
    """The k−1 score ciphertexts of one block, relinearised, rescaled (last level)."""
    out = []
    for w_j, n_j in zip(weights, norms, strict=True):
        acc = n_j
        for w, x in zip(w_j, block, strict=True):
            acc = ctx.add(acc, ctx.multiply(w, x))
        out.append(ctx.rescale(ctx.relinearize(acc)))
    return out


def block_sq_distance(ctx: CkksPublicContext, block: Sequence[Any], centre: Sequence[Any]) -> Any:
    """‖x − c‖² for every customer of a block (last level)."""
    acc = None
    for x, c in zip(block, centre, strict=True):
        diff = ctx.sub(x, c)
        sq = ctx.square(diff)
        acc = sq if acc is None else ctx.add(acc, sq)
    return ctx.rescale(ctx.relinearize(acc))


# --- tasks run by an executor: (state key, block indices, broadcast bytes) → bytes ---------

def scores_task(args: tuple[str, list[int], tuple[bytes, ...], int]) -> list[list[bytes]]:
    """Score ciphertexts for the given blocks against the ``m × d`` broadcast centroids."""
    key, block_ids, centroid_bytes, n_centres = args
    data: CentreData = get_state(key)
    ctx = data.ctx
    d = data.n_features
    cts = [ctx.ciphertext_from_bytes(b) for b in centroid_bytes]
    centroids = [cts[j * d:(j + 1) * d] for j in range(n_centres)]
    weights, norms = centroid_terms(ctx, centroids)
    return [
        [ctx.ciphertext_to_bytes(s) for s in block_scores(ctx, data.blocks[b], weights, norms)]
        for b in block_ids
    ]


def sums_task(args: tuple[str, list[int], list[tuple[bytes, ...]]]) -> list[bytes]:
    """Partial per-cluster sums (k−1)×d then counts (k−1), over the given blocks, as bytes.

    Products are added in three-component form across blocks, then relinearised and rescaled
    once per (cluster, feature). Slot-wise: the owner adds the slots up after decryption, so
    the centre needs no rotation keys and sums stay far from the CKKS range limit.
    """
    key, block_ids, onehots_per_block = args
    data: CentreData = get_state(key)
    ctx = data.ctx
    d = data.n_features
    sums: list[list[Any]] | None = None
    counts: list[Any] | None = None
    for b, onehot_bytes in zip(block_ids, onehots_per_block, strict=True):
        onehots = [ctx.ciphertext_from_bytes(o) for o in onehot_bytes]
        block = data.blocks[b]
        if sums is None or counts is None:
            sums = [[ctx.multiply(h, block[f]) for f in range(d)] for h in onehots]
            counts = list(onehots)
            continue
        for j, h in enumerate(onehots):
            for f in range(d):
                ctx.add_inplace(sums[j][f], ctx.multiply(h, block[f]))
            ctx.add_inplace(counts[j], h)
    if sums is None or counts is None:
        return []
    out = [ctx.ciphertext_to_bytes(ctx.rescale(ctx.relinearize(s))) for row in sums for s in row]
    out += [ctx.ciphertext_to_bytes(ctx.mod_switch_to_last(c)) for c in counts]
    return out


def add_partials(ctx: CkksPublicContext, partials: Sequence[Sequence[bytes]]) -> tuple[bytes, ...]:
    """Element-wise sum of the partial aggregates of :func:`sums_task` (bytes in, bytes out).

    A single partial passes through untouched: loading and re-serialising it would only cost
    the centre's front time (about 3 ms per ciphertext).
    """
    if len(partials) == 1:
        return tuple(partials[0])
    total: list[Any] = []
    for part in partials:
        cts = [ctx.ciphertext_from_bytes(b) for b in part]
        total = cts if not total else [ctx.add(a, b) for a, b in zip(total, cts, strict=True)]
    return tuple(ctx.ciphertext_to_bytes(c) for c in total)


def masked_task(args: tuple[str, list[int], npt.NDArray[np.float64]]) -> list[tuple[bytes, ...]]:
    """Per given block: its feature ciphertexts plus the plaintext masks (one row per feature)."""
    key, block_ids, masks = args
    data: CentreData = get_state(key)
    ctx = data.ctx
    return [
        tuple(ctx.ciphertext_to_bytes(ctx.add_plain(data.blocks[b][f], masks[f]))
              for f in range(data.n_features))
        for b in block_ids
    ]


def d2_task(args: tuple[str, list[int], tuple[bytes, ...], list[bytes | None], int]
            ) -> list[bytes]:
    """Scaled D²(x) = factor·(‖x − c_0‖² + min(0, s_1..s_m)) for the given blocks."""
    key, block_ids, c0_bytes, min_scores, factor = args
    data: CentreData = get_state(key)
    ctx = data.ctx
    c0 = [ctx.ciphertext_from_bytes(b) for b in c0_bytes]
    out = []
    for b, m in zip(block_ids, min_scores, strict=True):
        d2 = block_sq_distance(ctx, data.blocks[b], c0)
        if m is not None:
            d2 = ctx.add(d2, ctx.ciphertext_from_bytes(m))
        out.append(ctx.ciphertext_to_bytes(ctx.multiply_integer(d2, factor)))
    return out
