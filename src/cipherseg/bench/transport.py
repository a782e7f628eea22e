"""Benchmark: protocol 4.1 with the centre in this process vs as an HTTP service on loopback.

Same data, same initial centres, same iterations; the two modes alternate, and each ratio is
taken between neighbouring runs. On one machine the difference is what HTTP adds (framing,
copies, the service's event loop) — not network latency or bandwidth, which
``docs/benchmarks.md`` projects from the bytes per iteration.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cipherseg.testing.centre_service import CentreService
from cipherseg.transport.http import HttpTransport


def run_transport_bench(customers: int, *, k: int, iterations: int, repeats: int,
                        workers: int, seed: int,
                        on_fit: Callable[[], None] | None = None) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    from cipherseg.analytics.estimators import EncryptedKMeans
    from cipherseg.analytics.rfm import RFMScaler, compute_rfm
    from cipherseg.analytics.synthetic import generate_mall_transactions
    from cipherseg.encoding import FixedPointEncoder

    feats = compute_rfm(generate_mall_transactions(customers, seed=seed)).features
    X = FixedPointEncoder(2).quantise(np.asarray(RFMScaler(log=True).fit_transform(feats)))
    init = EncryptedKMeans(n_clusters=k, max_iter=1, random_state=seed,
                           n_jobs=workers).fit(X).init_centers_
    runs: dict[str, list[dict[str, Any]]] = {"in_process": [], "http": []}
    labels: dict[str, np.ndarray] = {}

    def fit(mode: str, centre: HttpTransport | None) -> None:
        km = EncryptedKMeans(n_clusters=k, init=init, max_iter=iterations, tol=0.0,
                             random_state=seed, n_jobs=workers)
        t = time.perf_counter()
        km.fit(X, centre=centre)
        seconds = time.perf_counter() - t
        rep = km.report_
        runs[mode].append({"seconds": seconds, "seconds_by_party_and_stage": rep["seconds"],
                           "mb": (rep["bytes_to_centre"] + rep["bytes_to_owner"]) / 1e6,
                           "n_iter": int(km.n_iter_)})
        labels[mode] = km.labels_
        if on_fit is not None:
            on_fit()

    with tempfile.TemporaryDirectory() as tmp, \
            CentreService(Path(tmp) / "token", workers=workers) as url:
        token = (Path(tmp) / "token").read_text().strip()
        with HttpTransport(url, token=token) as remote:
            for _ in range(repeats):
                fit("in_process", None)
                fit("http", remote)
    pairs = [h["seconds"] / i["seconds"] for i, h in zip(runs["in_process"], runs["http"],
                                                          strict=True)]
    return {
        "customers": len(X), "k": k, "iterations": iterations, "repeats": repeats,
        "workers": workers, "seed": seed,
        "median_seconds": {m: statistics.median(r["seconds"] for r in v)
                           for m, v in runs.items()},
        "pair_ratios_http_vs_in_process": pairs,
        "median_ratio": statistics.median(pairs),
        "mb_per_run": statistics.median(r["mb"] for r in runs["http"]),
        "ari_http_vs_in_process": float(adjusted_rand_score(labels["in_process"],
                                                            labels["http"])),
        "runs": runs,
    }


def plot_transport_bench(result: dict[str, Any], path: Path) -> Path:
    """Seconds of each run, in-process and over HTTP, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for offset, (mode, label) in enumerate((("in_process", "centre in this process"),
                                            ("http", "centre over HTTP (loopback)"))):
        secs = [r["seconds"] for r in result["runs"][mode]]
        ax.bar(np.arange(len(secs)) * 3 + offset, secs, label=label)
    ax.set_xticks(np.arange(result["repeats"]) * 3 + 0.5,
                  [f"pair {i + 1}" for i in range(result["repeats"])])
    ax.set_ylabel("seconds per fit")
    ax.set_title(f"Protocol 4.1, {result['customers']:,} customers, k={result['k']}, "
                 f"{result['iterations']} iterations\nHTTP / in-process, median of pairs: "
                 f"{result['median_ratio']:.2f}×", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
