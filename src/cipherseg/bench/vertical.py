"""``cipherseg bench vertical``: protocol 4.5 end to end (PSI included) at scale.

The issue's target shape: 2 holders × 100,000 shared customers (each with 20 % more the
other lacks), 3 + 2 features, k = 5, 10 iterations. Reported: wall seconds end to end; seconds
and bytes per party and stage; the machine's load before and after (2 cores shared); the
end-to-end time at 100 Mbps (compute + bytes / 12.5 MB/s) beside Mazzone et al.'s published
figure for 100k two-dimensional points and k = 5 (73 MB, just under 3 minutes), and our own run
on that shape (2 holders × 1 feature); a PSI-only measurement on 100k + 100k (20 % not shared).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cipherseg.analytics.synthetic_vertical import make_vertical_demo
from cipherseg.protocols.vertical.runner import VerticalResult, run_vertical

LINK_BYTES_PER_SECOND = 12.5e6  # 100 Mbit/s
MAZZONE = {"source": "Mazzone et al., Privacy-Preserving Vertical K-Means Clustering (2025)",
           "n": 100_000, "features": 2, "k": 5, "megabytes": 73.0,
           "seconds_at_100mbps": "just under 180"}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the pools' workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _run(n_shared: int, d_a: int, d_b: int, k: int, iterations: int, n_jobs: int,
         seed: int) -> tuple[VerticalResult, dict[str, Any]]:
    demo = make_vertical_demo(n_shared, k=k, d_a=d_a, d_b=d_b, extra_fraction=0.2,
                              spread=1.2, seed=seed)
    load_before = _load()
    cpu_before = _cpu_seconds()
    result = run_vertical([demo.X_a, demo.X_b], k, ids=[demo.ids_a, demo.ids_b],
                          max_iter=iterations, random_state=seed, n_jobs=n_jobs)
    summary: dict[str, Any] = {
        "n_shared": result.n_shared, "rows_per_holder": [len(demo.ids_a), len(demo.ids_b)],
        "features": [d_a, d_b], "k": k, "n_iter": result.n_iter,
        "wall_seconds": round(result.wall_seconds, 2),
        # On an idle 2-core machine the wall time is at least half of this.
        "cpu_seconds": round(_cpu_seconds() - cpu_before, 1),
        "megabytes": round(result.traffic.total_bytes() / 1e6, 1),
        "seconds_at_100mbps": round(result.wall_seconds
                                    + result.traffic.total_bytes() / LINK_BYTES_PER_SECOND, 1),
        # What an idle 2-core machine gives at best: every CPU second spread over both cores.
        "idle_lower_bound_seconds": round((_cpu_seconds() - cpu_before) / 2, 1),
        "idle_lower_bound_at_100mbps": round(
            (_cpu_seconds() - cpu_before) / 2
            + result.traffic.total_bytes() / LINK_BYTES_PER_SECOND, 1),
        "load_before": load_before, "load_after": _load(),
        "traffic": result.traffic.as_dict(),
    }
    return result, summary


def psi_only(n_rows: int, n_jobs: int, seed: int) -> dict[str, Any]:
    """The PSI of two holders alone: ``n_rows`` each (100k + 100k at the target), 20 % of
    each holder's rows not shared."""
    from cipherseg.engine.local import LocalExecutor
    from cipherseg.protocols.vertical import psi

    a_ids, b_ids = _phone_sets(n_rows, seed)
    session = os.urandom(16)
    cpu_before = _cpu_seconds()
    with LocalExecutor(n_jobs) as ex:
        start = time.perf_counter()
        a, b = psi.random_scalar(), psi.random_scalar()
        pa = psi.blind_many(psi.hash_many(a_ids, session, ex), a, ex)
        pb = psi.blind_many(psi.hash_many(b_ids, session, ex), b, ex)
        pab = psi.blind_many(sorted(pa), b, ex)
        pba = psi.blind_many(sorted(pb), a, ex)
        shared = set(pab) & set(pba)
        seconds = time.perf_counter() - start
    return {"rows_per_holder": [len(a_ids), len(b_ids)], "shared": len(shared),
            "seconds": round(seconds, 2), "n_jobs": n_jobs,
            "cpu_seconds": round(_cpu_seconds() - cpu_before, 1),
            "load_after": _load(),
            "ring_bytes": 2 * 32 * (len(a_ids) + len(b_ids))}


def _phone_sets(n_rows: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """Two holders' identifiers, ``n_rows`` each, 20 % of each not shared."""
    rng = np.random.default_rng(seed)
    n_extra = n_rows // 5
    n_shared = n_rows - n_extra
    numbers = rng.choice(10**8, size=n_shared + 2 * n_extra, replace=False)
    ids = [f"+86138{v:08d}".encode() for v in numbers]
    return ids[:n_shared + n_extra], ids[:n_shared] + ids[n_shared + n_extra:]


_IDENTITY = (1).to_bytes(32, "little")


def _ed25519_ring(a_ids: list[bytes], b_ids: list[bytes], check: str) -> int:
    """The two-holder ring as protocol 4.5 ran it before X25519 (Ed25519 points,
    crypto_scalarmult_ed25519_noclamp), with one of three treatments of received points:
    ``"is_valid"`` (main: crypto_core_ed25519_is_valid_point on every received point),
    ``"cofactor"`` (cofactor clearing: ×8 by three crypto_core_ed25519_add doublings, identity
    refused, on every received point) or ``"none"`` (the checks libsodium's scalar
    multiplication makes on its input anyway). Returns the intersection size."""
    import hashlib

    from nacl import bindings as sodium

    session = os.urandom(16)
    prefix = b"bench" + session

    def hashed(ids: list[bytes]) -> list[bytes]:
        return [sodium.crypto_core_ed25519_from_uniform(
            hashlib.sha512(prefix + x).digest()[:32]) for x in ids]

    def received(points: list[bytes]) -> list[bytes]:
        if check == "is_valid":
            if not all(sodium.crypto_core_ed25519_is_valid_point(p) for p in points):
                raise ValueError("invalid point")
            return points
        if check == "cofactor":
            out = []
            for p in points:
                q = sodium.crypto_core_ed25519_add(p, p)
                q = sodium.crypto_core_ed25519_add(q, q)
                q = sodium.crypto_core_ed25519_add(q, q)
                if q == _IDENTITY:
                    raise ValueError("identity")
                out.append(q)
            return out
        return points

    a, b = (sodium.crypto_core_ed25519_scalar_reduce(os.urandom(64)) for _ in range(2))
    pa = sorted(sodium.crypto_scalarmult_ed25519_noclamp(a, p) for p in hashed(a_ids))
    pb = sorted(sodium.crypto_scalarmult_ed25519_noclamp(b, p) for p in hashed(b_ids))
    pab = received([sodium.crypto_scalarmult_ed25519_noclamp(b, p) for p in received(pa)])
    pba = received([sodium.crypto_scalarmult_ed25519_noclamp(a, p) for p in received(pb)])
    return len(set(pab) & set(pba))


def _x25519_ring(a_ids: list[bytes], b_ids: list[bytes]) -> int:
    """The two-holder ring as protocol 4.5 runs it (:mod:`~cipherseg.protocols.vertical.psi`)."""
    from cipherseg.protocols.vertical import psi

    session = os.urandom(16)
    a, b = psi.random_scalar(), psi.random_scalar()
    pa = sorted(psi.blind(psi.hash_to_group(a_ids, session), a))
    pb = sorted(psi.blind(psi.hash_to_group(b_ids, session), b))
    return len(set(psi.blind(pa, b)) & set(psi.blind(pb, a)))


def psi_variants(n_rows: int, seed: int, rounds: int = 2) -> dict[str, Any]:
    """CPU seconds of the two-holder PSI ring (one process, ``n_rows`` per holder) for each
    treatment of received points, interleaved ``rounds`` times in the same run: main's
    ``is_valid_point`` checks, cofactor clearing by point additions, libsodium's own checks
    only, and X25519 (what protocol 4.5 ships)."""
    a_ids, b_ids = _phone_sets(n_rows, seed)
    runs: dict[str, Callable[[], int]] = {
        "ed25519 + is_valid_point (main before)": lambda: _ed25519_ring(a_ids, b_ids,
                                                                         "is_valid"),
        "ed25519 + cofactor clearing by 3 additions": lambda: _ed25519_ring(a_ids, b_ids,
                                                                             "cofactor"),
        "ed25519, libsodium's own input checks only": lambda: _ed25519_ring(a_ids, b_ids,
                                                                             "none"),
        "x25519 (shipped)": lambda: _x25519_ring(a_ids, b_ids),
    }
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    shared: dict[str, int] = {}
    for r in range(rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            start = time.process_time()
            shared[name] = runs[name]()
            cpu[name].append(time.process_time() - start)
    rows = len(a_ids) + len(b_ids)
    return {"rows_per_holder": n_rows, "rounds": rounds, "load_after": _load(),
            "variants": {name: {"cpu_seconds": [round(c, 2) for c in cpu[name]],
                                "us_per_row_and_holder": round(min(cpu[name]) / rows * 1e6, 1),
                                "shared": shared[name]} for name in runs}}


def run_bench(out_dir: Path, *, n_shared: int = 100_000, k: int = 5, iterations: int = 10,
              n_jobs: int = 2, seed: int = 0,
              notify: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the target shape, the Mazzone shape and PSI alone; write JSON and a plot."""
    say = notify or (lambda text: None)
    variant_rows = max(1000, n_shared // 10)
    say(f"PSI point treatments, {variant_rows:,} rows per holder, interleaved, same run")
    variants = psi_variants(variant_rows, seed)
    for name, v in variants["variants"].items():
        say(f"  {name}: {v['us_per_row_and_holder']} µs per row and holder")
    say(f"PSI alone: {n_shared:,} + {n_shared:,} rows, 20 % of each not shared")
    psi_result = psi_only(n_shared, n_jobs, seed)
    small = max(1000, n_shared // 5)
    say(f"PSI on {small:,} + {small:,} rows: 1 process against {n_jobs}, same run")
    pool_gain = {"rows_per_holder": small, "one_process": psi_only(small, 1, seed),
                 "pool": psi_only(small, n_jobs, seed)}
    say(f"target: 2 holders × {n_shared:,} shared, 3 + 2 features, k={k}, {iterations} iter")
    _, target = _run(n_shared, 3, 2, k, iterations, n_jobs, seed)
    say(f"Mazzone et al.'s shape: {n_shared:,} × 2 features (1 + 1), k=5")
    _, mazzone_shape = _run(n_shared, 1, 1, 5, iterations, n_jobs, seed + 1)
    payload = {"target": target, "mazzone_shape": mazzone_shape, "mazzone_published": MAZZONE,
               "psi": psi_result, "psi_pool_gain": pool_gain, "psi_variants": variants,
               "cpu_count": os.cpu_count()}
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(payload, out_dir / "vertical.png")
    return payload


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traffic = payload["target"]["traffic"]
    stages = ["setup", "psi", "upload", "init", "iterations", "final"]
    parties = sorted(traffic["seconds"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    bottom = np.zeros(len(parties))
    for stage in stages:
        secs = np.array([traffic["seconds"].get(p, {}).get(stage, 0.0) for p in parties])
        left.bar(parties, secs, bottom=bottom, label=stage)
        bottom += secs
    left.set_ylabel("handler wall seconds (load in the JSON)")
    left.set_title(f"seconds per party and stage ({payload['target']['n_shared']:,} shared)")
    left.legend(fontsize=8)
    bottom = np.zeros(len(parties))
    for stage in stages:
        mb = np.array([traffic["bytes_sent"].get(p, {}).get(stage, 0.0) / 1e6 for p in parties])
        right.bar(parties, mb, bottom=bottom, label=stage)
        bottom += mb
    right.set_ylabel("MB sent")
    right.set_title("bytes sent per party and stage")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
