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
        "load_before": load_before, "load_after": _load(),
        "traffic": result.traffic.as_dict(),
    }
    return result, summary


def psi_only(n_rows: int, n_jobs: int, seed: int) -> dict[str, Any]:
    """The PSI of two holders alone: ``n_rows`` each (100k + 100k at the target), 20 % of
    each holder's rows not shared."""
    from cipherseg.engine.local import LocalExecutor
    from cipherseg.protocols.vertical import psi

    rng = np.random.default_rng(seed)
    n_extra = n_rows // 5
    n_shared = n_rows - n_extra
    numbers = rng.choice(10**8, size=n_shared + 2 * n_extra, replace=False)
    ids = [f"+86138{v:08d}".encode() for v in numbers]
    a_ids, b_ids = ids[:n_shared + n_extra], ids[:n_shared] + ids[n_shared + n_extra:]
    session = os.urandom(16)
    cpu_before = _cpu_seconds()
    with LocalExecutor(n_jobs) as ex:
        start = time.perf_counter()
        a, b = psi.random_scalar(), psi.random_scalar()
        pa = psi.blind_many(psi.hash_many(a_ids, session, ex), a, ex)
        pb = psi.blind_many(psi.hash_many(b_ids, session, ex), b, ex)
        pab = psi.blind_many(sorted(pa), b, ex, check="a")
        pba = psi.blind_many(sorted(pb), a, ex, check="b")
        psi.check_many(pab, "a back", ex)
        psi.check_many(pba, "b back", ex)
        shared = set(pab) & set(pba)
        seconds = time.perf_counter() - start
    return {"rows_per_holder": [len(a_ids), len(b_ids)], "shared": len(shared),
            "seconds": round(seconds, 2), "n_jobs": n_jobs,
            "cpu_seconds": round(_cpu_seconds() - cpu_before, 1),
            "load_after": _load(),
            "ring_bytes": 2 * 32 * (len(a_ids) + len(b_ids))}


def run_bench(out_dir: Path, *, n_shared: int = 100_000, k: int = 5, iterations: int = 10,
              n_jobs: int = 2, seed: int = 0,
              notify: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the target shape, the Mazzone shape and PSI alone; write JSON and a plot."""
    say = notify or (lambda text: None)
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
               "psi": psi_result, "psi_pool_gain": pool_gain, "cpu_count": os.cpu_count()}
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
