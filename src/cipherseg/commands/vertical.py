"""`cipherseg vertical-demo` and `cipherseg bench vertical` (protocol 4.5)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cipherseg.commands.joint import _write_json as write_json  # one JSON writer for benches

_STAGES = {
    "psi": "private set intersection (aligning the holders)",
    "upload": "holders encrypt and upload their columns",
    "init": "k-means++ with secure selection",
    "iterations": "encrypted Lloyd iterations",
    "final": "final labels",
}


class _Stages:
    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.seen: list[str] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        key = _STAGES.get(stage)
        if key is None:
            return
        if key not in self.seen:
            for earlier in self.seen:
                self.progress.done(earlier)
            self.seen.append(key)
        self.progress.callback(key, done, total)

    def finish(self) -> None:
        for key in self.seen:
            self.progress.done(key)


def vertical_demo(
    customers: Annotated[int, typer.Option(min=20, help="Customers both holders know.")]
    = 10_000,
    k: Annotated[int, typer.Option(min=2, max=16)] = 4,
    extra: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of customers each "
                                                                 "holder has alone.")] = 0.2,
    seed: Annotated[int, typer.Option()] = 0,
    jobs: Annotated[int, typer.Option(min=1, help="Processes for the PSI.")] = 2,
    json_path: Annotated[Path | None, typer.Option("--json")] = None,
) -> None:
    """Two holders (a mall's 3 columns, a merchant's 2) segment their shared customers.

    Neither holder's columns alone recover the segments (each sees pairs of them merged).
    Prints the ARI against the planted segments of k-means on each holder's own columns and
    of the encrypted joint run, the joint run's ARI against scikit-learn on the joined
    plaintext from the same initial records, and seconds and bytes per party.
    """
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from cipherseg.analytics.synthetic_vertical import make_vertical_demo
    from cipherseg.commands.progress import StageProgress, console
    from cipherseg.protocols.vertical.runner import run_vertical

    demo = make_vertical_demo(customers, k=k, extra_fraction=extra, seed=seed)
    X, truth, rows_a, rows_b = demo.joined()
    alone_a = KMeans(k, n_init=10, random_state=seed).fit(demo.X_a[rows_a]).labels_
    alone_b = KMeans(k, n_init=10, random_state=seed).fit(demo.X_b[rows_b]).labels_
    with StageProgress() as progress:
        stages = _Stages(progress)
        result = run_vertical([demo.X_a, demo.X_b], k, ids=[demo.ids_a, demo.ids_b],
                              random_state=seed, n_jobs=jobs, progress=stages)
        stages.finish()
    joint = result.labels[0][rows_a]
    position = {int(r): i for i, r in enumerate(rows_a)}
    picked = [position[int(result.shared_rows[0][i])] for i in result.picked_indices]
    reference = KMeans(k, init=X[picked], n_init=1, tol=0.0, algorithm="lloyd").fit(X)
    report = {
        "customers_shared": result.n_shared, "rows": [len(demo.ids_a), len(demo.ids_b)],
        "k": k, "n_iter": result.n_iter,
        "ari_holder_a_alone": adjusted_rand_score(truth, alone_a),
        "ari_holder_b_alone": adjusted_rand_score(truth, alone_b),
        "ari_joint_encrypted": adjusted_rand_score(truth, joint),
        "ari_joint_vs_sklearn_same_init": adjusted_rand_score(reference.labels_, joint),
        "max_centroid_error": float(np.abs(result.centroids
                                           - reference.cluster_centers_).max()),
        "wall_seconds": result.wall_seconds, "traffic": result.traffic.as_dict(),
    }
    console.print(f"{result.n_shared:,} shared customers found by PSI (of "
                  f"{len(demo.ids_a):,} and {len(demo.ids_b):,}); k={k}, "
                  f"{result.n_iter} iterations, {result.wall_seconds:.1f} s")
    console.print(f"ARI against the planted segments: mall alone (3 columns) "
                  f"{report['ari_holder_a_alone']:.3f}, merchant alone (2 columns) "
                  f"{report['ari_holder_b_alone']:.3f}, joint encrypted "
                  f"{report['ari_joint_encrypted']:.3f}")
    console.print(f"joint run vs scikit-learn on the joined plaintext (same initial records): "
                  f"ARI {report['ari_joint_vs_sklearn_same_init']:.4f}, max centroid error "
                  f"{report['max_centroid_error']:.2g}")
    traffic = result.traffic.as_dict()
    for party in sorted(traffic["seconds"]):
        secs = sum(traffic["seconds"][party].values())
        sent = sum(traffic["bytes_sent"].get(party, {}).values()) / 1e6
        console.print(f"  {party}: {secs:.1f} s of work, {sent:.1f} MB sent")
    if json_path is not None:
        write_json(json_path, report)
        console.print(f"wrote {json_path}")


def bench_vertical(
    customers: Annotated[int, typer.Option(min=1000, help="Shared customers.")] = 100_000,
    k: Annotated[int, typer.Option(min=2)] = 5,
    iterations: Annotated[int, typer.Option(min=1)] = 10,
    jobs: Annotated[int, typer.Option(min=1)] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    json_path: Annotated[Path, typer.Option("--json")] = Path("bench/results/vertical.json"),
) -> None:
    """Vertical k-means at the target shape (2 holders × 100k shared, 20 % more each, 3 + 2
    features, k=5, 10 iterations, PSI included), Mazzone et al.'s shape, PSI alone."""
    from cipherseg.bench.vertical import run_bench
    from cipherseg.commands.progress import console

    payload = run_bench(json_path.parent, n_shared=customers, k=k, iterations=iterations,
                        n_jobs=jobs, seed=seed, notify=console.print)
    write_json(json_path, payload)
    for name in ("target", "mazzone_shape"):
        r = payload[name]
        console.print(f"{name}: {r['n_shared']:,} shared × {sum(r['features'])} features, "
                      f"k={r['k']}, {r['n_iter']} iterations: {r['wall_seconds']:.1f} s, "
                      f"{r['megabytes']:.0f} MB → {r['seconds_at_100mbps']:.0f} s at 100 Mbit/s "
                      f"(load {r['load_before']} → {r['load_after']})")
    psi = payload["psi"]
    console.print(f"PSI alone: {psi['rows_per_holder']} rows, {psi['shared']:,} shared, "
                  f"{psi['seconds']:.1f} s with {psi['n_jobs']} processes")
    console.print(f"wrote {json_path} and {json_path.parent / 'vertical.png'}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach this module's commands."""
    app.command("vertical-demo")(vertical_demo)
    bench_app.command("vertical")(bench_vertical)
