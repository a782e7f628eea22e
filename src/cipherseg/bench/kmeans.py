"""Benchmark: encrypted k-means (protocol 4.1) against scikit-learn in the same run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def run_kmeans_bench(sizes: list[int], *, k: int, iterations: int, seed: int,
                     n_jobs: int | None, progress: Any = None,
                     executor: Any = None) -> list[dict[str, Any]]:
    """For each size: synthetic mall → RFM → encrypted k-means; sklearn on the same data."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from cipherseg.analytics.estimators import EncryptedKMeans
    from cipherseg.analytics.rfm import RFMScaler, compute_rfm
    from cipherseg.analytics.synthetic import generate_mall_transactions
    from cipherseg.encoding import FixedPointEncoder

    results = []
    for n in sizes:
        if progress is not None:
            progress.stage(f"data-{n}", f"data for {n:,} customers")
        feats = compute_rfm(generate_mall_transactions(n, seed=seed)).features
        X = FixedPointEncoder(2).quantise(np.asarray(RFMScaler(log=True).fit_transform(feats)))
        if progress is not None:
            progress.done(f"data-{n}")
        t = time.perf_counter()
        enc = EncryptedKMeans(n_clusters=k, max_iter=iterations, tol=0.0, random_state=seed,
                              n_jobs=n_jobs, decimals=2)
        enc.fit(X, progress=None if progress is None else progress.callback, executor=executor)
        encrypted = time.perf_counter() - t
        t = time.perf_counter()
        ref = KMeans(n_clusters=k, init=enc.init_centers_, n_init=1, max_iter=iterations,
                     tol=0.0).fit(X)
        plain = time.perf_counter() - t
        rep = enc.report_
        per_iter = rep["mb_per_iteration"]
        results.append({
            "customers": len(X),
            "n_iter": int(enc.n_iter_),
            "sklearn_n_iter": int(ref.n_iter_),
            "seconds_encrypted_total": encrypted,
            "seconds_by_party_and_stage": rep["seconds"],
            "seconds_sklearn": plain,
            "ratio_encrypted_vs_plain": encrypted / plain if plain > 0 else float("inf"),
            "mb_per_iteration": per_iter,
            "mb_per_iteration_mean": float(np.mean(per_iter)) if per_iter else 0.0,
            "mb_total": (rep["bytes_to_centre"] + rep["bytes_to_owner"]) / 1e6,
            "ari_vs_sklearn": float(adjusted_rand_score(ref.labels_, enc.labels_)),
        })
    return results


def plot_kmeans_bench(results: list[dict[str, Any]], path: Path) -> Path:
    """Stacked seconds per stage and party for each size, with scikit-learn's time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = sorted({f"{party}:{stage}" for r in results
                     for party, d in r["seconds_by_party_and_stage"].items() for stage in d})
    labels = [f"{r['customers']:,}" for r in results]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottom = np.zeros(len(results))
    for name in stages:
        party, stage = name.split(":")
        vals = np.array([r["seconds_by_party_and_stage"].get(party, {}).get(stage, 0.0)
                         for r in results])
        ax.bar(labels, vals, bottom=bottom, label=name)
        bottom += vals
    ax.scatter(labels, [r["seconds_sklearn"] for r in results], color="black", marker="x",
               zorder=3, label="scikit-learn KMeans (plaintext)")
    ax.set_xlabel("customers")
    ax.set_ylabel("seconds")
    ax.set_title("Encrypted k-means (CKKS, protocol 4.1): time per party and stage")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
