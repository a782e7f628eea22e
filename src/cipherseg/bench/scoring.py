"""Benchmark: customers scored per second, plaintext scikit-learn vs encrypted scoring
(``cipherseg bench score``)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cipherseg.analytics.bank import load_bank, make_logistic_pipeline, split_bank
from cipherseg.errors import ParameterError
from cipherseg.progress import Progress


def run_scoring_bench(data_dir: Path, sizes: Sequence[int] = (4096, 16384, 41188), *,
                      variant: str = "bank-additional-full", seed: int = 0, repeats: int = 3,
                      blas_threads: int | None = 1,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Customers scored per second: plaintext scikit-learn vs encrypted (both model modes).

    The model is the plaintext pipeline fitted on the training split (without ``duration``);
    ``sizes`` customers are drawn from the whole file (with repetition beyond its size).
    Encrypted times are end to end in one process: key generation, preprocessing, encoding
    and encryption at the owner, the centre's work, decryption. Every time is the median of
    ``repeats`` runs.
    """
    from threadpoolctl import threadpool_limits

    if repeats < 1:
        raise ParameterError(f"repeats must be >= 1, got {repeats}")
    with threadpool_limits(limits=blas_threads):
        return _run_scoring_bench(data_dir, sizes, variant, seed, repeats, progress)


def _median_run(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def _run_scoring_bench(data_dir: Path, sizes: Sequence[int], variant: str, seed: int,
                       repeats: int, progress: Progress | None) -> dict[str, Any]:
    from cipherseg.analytics.scoring import EncryptedScorer

    total, started_steps = 3 * len(sizes), 0

    def say(step: str) -> None:
        nonlocal started_steps
        if progress is not None:
            progress(step, started_steps, total)
        started_steps += 1

    data = load_bank(data_dir, variant, with_duration=False)
    train, _ = split_bank(data, seed=seed)
    model = make_logistic_pipeline(train).fit(train.features, train.target)
    rng = np.random.default_rng(seed)
    rows_out = []
    for n in sizes:
        if n < 1:
            raise ParameterError(f"sizes must be positive, got {n}")
        rows = rng.choice(data.n_customers, size=n, replace=n > data.n_customers)
        X = data.features.iloc[rows]
        say(f"{n} customers: plaintext")
        plain_s, plain = _median_run(partial(model.decision_function, X), repeats)
        Z = model[:-1].transform(X)
        dot_s, _ = _median_run(partial(model[-1].decision_function, Z), repeats)
        row: dict[str, Any] = {"customers": n, "features": int(Z.shape[1]),
                               "plaintext_seconds": plain_s,
                               "plaintext_customers_per_second": n / plain_s,
                               "plaintext_dot_only_seconds": dot_s}
        for mode, encrypt_model in (("encrypted", False), ("encrypted_model_hidden", True)):
            say(f"{n} customers: {mode}")
            scorer = EncryptedScorer(model, encrypt_model=encrypt_model)
            secs, enc = _median_run(partial(scorer.score, X), repeats)
            run = scorer.last_run_
            row[mode] = {
                "seconds": secs, "customers_per_second": n / secs,
                "owner_encrypt_seconds": run.encrypt_seconds,
                "centre_seconds": run.centre_seconds,
                "owner_decrypt_seconds": run.decrypt_seconds,
                "blocks": run.n_blocks,
                "mb_to_centre": run.bytes_to_centre / 1e6,
                "mb_to_owner": run.bytes_to_owner / 1e6,
                "max_abs_score_error": float(np.max(np.abs(enc - plain))),
                "slowdown_vs_plaintext": secs / plain_s,
            }
        rows_out.append(row)
    return {"variant": variant, "model": "LogisticRegression in the owner's Pipeline",
            "repeats": repeats, "statistic": "median (per-party breakdown: last repeat)",
            "machine": {"python": platform.python_version(), "processor": platform.machine()},
            "results": rows_out}


def plot_scoring_bench(results: dict[str, Any], path: Path) -> Path:
    """Customers per second against batch size (log-log), plaintext and encrypted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["results"]
    n = [r["customers"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(n, [r["plaintext_customers_per_second"] for r in rows], "o-", label="plaintext")
    ax.plot(n, [r["encrypted"]["customers_per_second"] for r in rows], "s-",
            label="encrypted features, plaintext model at the centre")
    ax.plot(n, [r["encrypted_model_hidden"]["customers_per_second"] for r in rows], "^-",
            label="encrypted features and model")
    ax.set(xscale="log", yscale="log", xlabel="customers scored", ylabel="customers / second",
           title=f"Propensity scoring throughput ({results['variant']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
