"""Joint k-means (protocol 4.2): the demo, the cost benchmark and the DP trade-off.

* :func:`run_demo` — owners, manager and centre in separate processes; ARI against
  scikit-learn on the pooled plaintext from the same initial centres, max centroid error,
  bytes per party per iteration, seconds per stage.
* :func:`run_joint_bench` — the same federated k-means with threshold-encrypted aggregation
  and with plaintext aggregation, in the same run (same data, seeds, init and iterations);
  cost against the number of owners.
* :func:`run_dp_bench` — ARI against epsilon.

Data: each owner is a synthetic mall (:mod:`cipherseg.analytics.synthetic`) turned into RFM
features (:mod:`cipherseg.analytics.rfm`) and mapped to a *public*, data-independent scale
(:func:`public_rfm_transform`), so that owners need no joint statistics to agree on units.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.progress import Progress

# Public feature scale and DP bounds: recency in months, log(1 + invoices), log(1 + spend).
RFM_FEATURES = ("recency_months", "log1p_frequency", "log1p_monetary")
RFM_LOWER = (0.0, 0.0, 0.0)
RFM_UPPER = (13.0, 6.5, 11.5)
DAYS_PER_MONTH = 30.44


def public_rfm_transform(features: Any) -> npt.NDArray[np.float64]:
    """RFM features (recency days, frequency, monetary) on a fixed public scale.

    >>> import pandas as pd
    >>> f = pd.DataFrame({"recency": [30.44], "frequency": [0.0], "monetary": [np.e - 1]})
    >>> public_rfm_transform(f).round(6).tolist()
    [[1.0, 0.0, 1.0]]
    """
    return np.column_stack([
        np.asarray(features["recency"], dtype=np.float64) / DAYS_PER_MONTH,
        np.log1p(np.asarray(features["frequency"], dtype=np.float64)),
        np.log1p(np.asarray(features["monetary"], dtype=np.float64)),
    ])


def owner_rfm_features(party_id: int, customers: int, seed: int) -> npt.NDArray[np.float64]:
    """Owner ``party_id``'s customers: its own synthetic mall (seeded per owner) → RFM →
    public scale. Runs inside the owner's process in the demo."""
    from cipherseg.analytics.rfm import compute_rfm
    from cipherseg.analytics.synthetic import generate_mall_transactions

    tx = generate_mall_transactions(customers, seed=seed * 1000 + party_id)
    return public_rfm_transform(compute_rfm(tx).features)


def owner_blob_features(party_id: int, customers: int, seed: int) -> npt.NDArray[np.float64]:
    """Quick synthetic owners: four Gaussian blobs in the RFM box (tests, fast runs)."""
    rng = np.random.default_rng(seed * 1000 + party_id)
    centres = np.array([[1.0, 3.0, 6.0], [4.0, 1.5, 4.5], [9.0, 0.8, 3.5], [2.0, 2.0, 8.0]])
    labels = rng.integers(0, 4, customers)
    X = centres[labels] + rng.normal(0, 0.6, (customers, 3))
    out: npt.NDArray[np.float64] = np.clip(X, RFM_LOWER, RFM_UPPER)
    return out


DATA_SOURCES: dict[str, Callable[..., npt.NDArray[np.float64]]] = {
    "rfm": owner_rfm_features,
    "blobs": owner_blob_features,
}


def _data(source: str, customers: int, seed: int) -> Callable[[int], npt.NDArray[np.float64]]:
    if source not in DATA_SOURCES:
        raise ValueError(f"data must be one of {sorted(DATA_SOURCES)}, got {source!r}")
    return functools.partial(DATA_SOURCES[source], customers=customers, seed=seed)


def evaluate(result: Any, parts: Sequence[npt.NDArray[np.float64]], decimals: int
             ) -> dict[str, Any]:
    """ARI and centroid error against scikit-learn on the pooled plaintext (quantised to the
    same fixed-point grid) from the run's own initial centres. Evaluation only: it needs
    every owner's data, which no party of the protocol has."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from cipherseg.encoding import FixedPointEncoder

    pooled = FixedPointEncoder(decimals=decimals).quantise(np.vstack(parts))
    start = time.perf_counter()
    ref = KMeans(result.init_centres.shape[0], init=result.init_centres, n_init=1,
                 max_iter=300, tol=0.0, algorithm="lloyd").fit(pooled)
    seconds = time.perf_counter() - start
    labels = np.concatenate(result.labels)
    return {
        "ari_vs_sklearn_pooled": float(adjusted_rand_score(ref.labels_, labels)),
        "max_centroid_error": float(np.abs(ref.cluster_centers_ - result.centroids).max()),
        "sklearn_n_iter": int(ref.n_iter_),
        "sklearn_seconds": seconds,
    }


def summarise(result: Any) -> dict[str, Any]:
    """The JSON-able facts of one run."""
    timings: dict[str, float] = {}
    for party_timings in result.party_timings.values():
        for key, value in party_timings.items():
            timings[key] = timings.get(key, 0.0) + value
    return {
        "mode": result.mode,
        "n_iter": int(result.n_iter),
        "seconds_per_stage": {k: float(v) for k, v in result.stage_seconds.items()},
        "cpu_seconds_by_step": {k: round(v, 6) for k, v in sorted(timings.items())},
        "cpu_seconds_by_party": {p: round(sum(t.values()), 6)
                                 for p, t in result.party_timings.items()},
        "bytes_per_party_per_iteration": {p: round(v, 1) for p, v in
                                          result.bytes_per_party_per_iteration().items()},
        "traffic": result.traffic.as_dict(),
        "dp_epsilon_spent": result.dp_epsilon_spent,
    }


# ---------------------------------------------------------------------- demo
def run_demo(*, owners: int, customers: int, k: int, dp_epsilon: float | None = None,
             dp_delta: float = 1e-6, decimals: int = 2, max_iter: int = 100, seed: int = 0,
             data: str = "rfm", processes: bool = True,
             progress: Progress | None = None) -> dict[str, Any]:
    """One joint k-means session among ``owners`` synthetic malls (see module docstring)."""
    from cipherseg.hosting.joint_processes import run_joint_kmeans_processes
    from cipherseg.protocols.dp import DPConfig
    from cipherseg.protocols.joint.runner import run_joint_kmeans
    from cipherseg.schemes.threshold import ThresholdParams

    params = ThresholdParams()
    factory = _data(data, customers, seed)
    dp = None
    init = "k-means++"
    if dp_epsilon is not None:
        dp = DPConfig(dp_epsilon, dp_delta, max_iter, RFM_LOWER, RFM_UPPER)
        init = "random"
    start = time.perf_counter()
    if processes:
        result = run_joint_kmeans_processes(factory, owners, len(RFM_FEATURES), k, params=params,
                                            init=init, max_iter=max_iter, decimals=decimals,
                                            dp=dp, random_state=seed, progress=progress)
        parts = [factory(i) for i in range(1, owners + 1)]  # the evaluator's copy
    else:
        parts = [factory(i) for i in range(1, owners + 1)]
        result = run_joint_kmeans(parts, k, params=params, init=init, max_iter=max_iter,
                                  decimals=decimals, dp=dp, random_state=seed)
    wall = time.perf_counter() - start
    out = {
        "owners": owners, "customers_per_owner": customers, "k": k, "decimals": decimals,
        "data": data, "features": list(RFM_FEATURES), "separate_processes": processes,
        "seed": seed, "init": init, "wall_seconds_including_data": wall,
        "security": params.security_estimate(),
        "dp": None if dp is None else {
            "epsilon": dp.epsilon, "delta": dp.delta, "releases": dp.releases,
            "noise_multiplier": dp.noise_multiplier, "clip_norm": dp.clip_norm,
            "lower": list(dp.lower), "upper": list(dp.upper),
            "noise_added_by": "each owner, full width, before encryption",
        },
        "centroids": result.centroids.tolist(),
        "init_centres": result.init_centres.tolist(),
    }
    out.update(summarise(result))
    out.update(evaluate(result, parts, decimals))
    return out


# ---------------------------------------------------------------------- primitives
def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(statistics.median(samples))


def measure_primitives(repeats: int = 20, values: int = 16, parties: int = 7) -> dict[str, Any]:
    """Median milliseconds of the threshold scheme's operations (default parameters)."""
    from cipherseg.schemes.rns_ntt import RnsRing, ntt_primes
    from cipherseg.schemes.threshold import (
        ThresholdParams,
        encrypt,
        fuse,
        joint_public_key,
        new_crs,
    )
    from cipherseg.schemes.threshold_keys import KeyShare

    out: dict[str, Any] = {"repeats": repeats}
    rng = np.random.default_rng(0)
    for n in (4096, 8192):
        ring = RnsRing(n, ntt_primes(n, 5))
        a = ring.from_int(rng.integers(-(2**40), 2**40, n))
        b = ring.from_int(rng.integers(-1, 2, n))
        out[f"ntt_forward_5primes_N{n}_ms"] = _median_ms(
            functools.partial(ring.forward, a), repeats)
        out[f"product_5primes_N{n}_ms"] = _median_ms(
            functools.partial(ring.multiply, a, b), repeats)
    params = ThresholdParams()
    crs = new_crs(params, b"cipherseg primitives benchmark..")
    out["keygen_ms"] = _median_ms(lambda: KeyShare.generate(params, crs, 1), repeats)
    shares = [KeyShare.generate(params, crs, i) for i in range(parties)]
    pk = joint_public_key(params, crs, [s.public_share for s in shares])
    vec = np.arange(values, dtype=np.int64)
    ct = encrypt(pk, vec)
    partials = [s.partial_decrypt(ct) for s in shares]
    out.update({
        "values": values, "parties": parties,
        "encrypt_ms": _median_ms(lambda: encrypt(pk, vec), repeats),
        "partial_decrypt_ms": _median_ms(lambda: shares[0].partial_decrypt(ct), repeats),
        "fuse_ms": _median_ms(lambda: fuse(ct, partials), repeats),
        "add_ms": _median_ms(lambda: ct + ct, repeats),
        "ciphertext_bytes": len(ct.to_bytes()),
        "partial_decryption_bytes": len(partials[0].to_bytes()),
        "public_share_bytes": len(shares[0].public_share.to_bytes()),
    })
    return out


# ---------------------------------------------------------------------- cost benchmark
def _timed_run(parts: Sequence[npt.NDArray[np.float64]], k: int, mode: str, seed: int,
               decimals: int, max_iter: int) -> tuple[float, Any]:
    from cipherseg.protocols.joint.runner import run_joint_kmeans

    start = time.perf_counter()
    result = run_joint_kmeans(parts, k, mode=mode, random_state=seed, decimals=decimals,
                              max_iter=max_iter)
    return time.perf_counter() - start, result


def compare_modes(parts: Sequence[npt.NDArray[np.float64]], *, k: int, seed: int,
                  decimals: int, max_iter: int, repeats: int) -> dict[str, Any]:
    """Threshold vs plaintext aggregation on the same data, interleaved ``repeats`` times;
    medians. Both runs follow the same init and iterations (checked)."""
    times: dict[str, list[float]] = {"threshold": [], "plain": []}
    iteration_times: dict[str, list[float]] = {"threshold": [], "plain": []}
    steps: dict[str, list[dict[str, float]]] = {"threshold": [], "plain": []}
    last: dict[str, Any] = {}
    for _ in range(repeats):
        for mode in ("plain", "threshold"):
            seconds, result = _timed_run(parts, k, mode, seed, decimals, max_iter)
            times[mode].append(seconds)
            iteration_times[mode].append(result.stage_seconds.get("iterations", 0.0)
                                         / max(result.n_iter, 1))
            steps[mode].append(summarise(result)["cpu_seconds_by_step"])
            last[mode] = result
    same = (np.array_equal(last["plain"].centroids, last["threshold"].centroids)
            and last["plain"].n_iter == last["threshold"].n_iter)
    med = {m: statistics.median(v) for m, v in times.items()}
    med_iter = {m: statistics.median(v) for m, v in iteration_times.items()}
    # Each repeat runs the two modes back to back, under about the same machine load: the
    # median of the per-repeat ratios is the headline figure.
    pair_ratios = [t / p for t, p in zip(times["threshold"], times["plain"], strict=True)]
    return {
        "owners": len(parts), "customers_per_owner": int(parts[0].shape[0]), "k": k,
        "repeats": repeats, "identical_results": bool(same),
        "seconds": {m: v for m, v in times.items()},
        "median_seconds": med,
        "pair_ratios": pair_ratios,
        "ratio_threshold_vs_plain": statistics.median(pair_ratios),
        "ratio_of_medians": med["threshold"] / med["plain"],
        "median_seconds_per_iteration": med_iter,
        "ratio_per_iteration": med_iter["threshold"] / med_iter["plain"],
        "median_cpu_seconds_by_step": {
            m: {key: statistics.median(r.get(key, 0.0) for r in runs)
                for key in sorted({key for r in runs for key in r})}
            for m, runs in steps.items()},
        "threshold": summarise(last["threshold"]),
        "plain": summarise(last["plain"]),
    }


def run_joint_bench(*, owners: int = 5, customers: int = 200_000, k: int = 4,
                    owner_counts: Sequence[int] = (2, 3, 4, 5, 6),
                    scaling_customers: int | None = None, repeats: int = 3, seed: int = 0,
                    decimals: int = 2, max_iter: int = 100, data: str = "rfm",
                    primitive_repeats: int = 20,
                    progress: Progress | None = None) -> dict[str, Any]:
    """The main comparison (``owners`` × ``customers``) and the cost against owners."""
    from cipherseg.schemes.threshold import ThresholdParams

    factory = _data(data, customers, seed)
    scaling_n = scaling_customers or customers
    scaling_factory = _data(data, scaling_n, seed)
    most = max([owners, *owner_counts])
    if progress:
        progress("data", 0, most)
    parts_all = []
    for i in range(1, most + 1):
        parts_all.append(factory(i))
        if progress:
            progress("data", i, most)
    scaling_parts = parts_all if scaling_n == customers else [
        scaling_factory(i) for i in range(1, most + 1)]
    if progress:
        progress("main", 0, 1)
    main = compare_modes(parts_all[:owners], k=k, seed=seed, decimals=decimals,
                         max_iter=max_iter, repeats=repeats)
    if progress:
        progress("main", 1, 1)
    scaling = []
    for j, n in enumerate(owner_counts):
        if progress:
            progress("owners", j, len(owner_counts))
        scaling.append(compare_modes(scaling_parts[:n], k=k, seed=seed, decimals=decimals,
                                     max_iter=max_iter, repeats=max(1, repeats // 2)))
    if progress:
        progress("owners", len(owner_counts), len(owner_counts))
    primitives = measure_primitives(repeats=primitive_repeats)
    return {
        "benchmark": "joint k-means (protocol 4.2): threshold vs plaintext aggregation",
        "primitives": primitives,
        "data": data, "seed": seed, "decimals": decimals,
        "security": ThresholdParams().security_estimate(),
        "note": ("all parties in one process, run one after another (total CPU time of the "
                 "protocol); both modes share the same code path, data, init and iterations"),
        "main": main, "by_owners": scaling,
    }


def plot_joint_bench(payload: dict[str, Any], path: Path) -> Path:
    """Left: seconds per step for both modes (main run). Right: seconds against owners."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    main = payload["main"]
    by_step = main["median_cpu_seconds_by_step"]
    steps = sorted(set(by_step["threshold"]) | set(by_step["plain"]))
    modes = ["plain", "threshold"]
    colours = plt.get_cmap("tab20")
    bottom = np.zeros(2)
    for i, step in enumerate(steps):
        vals = np.array([by_step[m].get(step, 0.0) for m in modes])
        if vals.max() < 1e-3:
            continue
        left.bar(["plaintext aggregation", "threshold encryption"], vals, bottom=bottom,
                 label=step, color=colours(i % 20))
        bottom += vals
    left.set_ylabel("CPU seconds per run (median of repeats)")
    left.set_title(f"{main['owners']} owners × {main['customers_per_owner']:,} customers, "
                   f"k={main['k']}: ratio {main['ratio_threshold_vs_plain']:.2f}×")
    left.legend(fontsize=7)
    rows = payload["by_owners"]
    counts = [r["owners"] for r in rows]
    for mode, marker in (("plain", "o"), ("threshold", "s")):
        right.plot(counts, [1e3 * r["median_seconds_per_iteration"][mode] for r in rows],
                   marker=marker, label=f"{mode} aggregation")
    ax2 = right.twinx()
    ax2.plot(counts, [r["ratio_per_iteration"] for r in rows], color="grey", linestyle="--",
             label="ratio")
    ax2.set_ylabel("threshold / plain")
    ax2.set_ylim(0, max(2.5, max(r["ratio_per_iteration"] for r in rows) * 1.1))
    per = rows[0]["customers_per_owner"]
    right.set_xticks(counts)
    right.set_xlabel("data owners")
    right.set_ylabel("milliseconds per Lloyd iteration (median)")
    right.set_title(f"cost against owners ({per:,} customers each)")
    right.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- DP trade-off
def run_dp_bench(*, epsilons: Sequence[float], owners: int = 3, customers: int = 20_000,
                 k: int = 4, seeds: Sequence[int] = (0, 1, 2), delta: float = 1e-6,
                 max_iter: int = 10, decimals: int = 2, data: str = "rfm",
                 progress: Progress | None = None) -> dict[str, Any]:
    """ARI of DP joint k-means against (a) the same run without noise from the same
    data-independent init and (b) scikit-learn's k-means++ on the pooled data.

    Runs use plaintext aggregation: the DP noise is added by the owners before encryption,
    so the released values are identical with threshold encryption (tested); only time
    differs.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from cipherseg.protocols.dp import DPConfig
    from cipherseg.protocols.joint.runner import run_joint_kmeans

    rows = []
    baselines: list[float] = []  # per seed: the noiseless run from the same init vs sklearn
    total = len(seeds) * (len(epsilons) + 1)
    done = 0
    for seed in seeds:
        factory = _data(data, customers, seed)
        parts = [factory(i) for i in range(1, owners + 1)]
        pooled = np.vstack(parts)
        best = KMeans(k, n_init=10, random_state=seed).fit(pooled).labels_
        huge = DPConfig(100.0, delta, max_iter, RFM_LOWER, RFM_UPPER)
        noiseless = run_joint_kmeans(parts, k, mode="plain", init="random", dp=huge,
                                     max_iter=max_iter, decimals=decimals, random_state=seed)
        reference = run_joint_kmeans(parts, k, mode="plain", init=noiseless.init_centres,
                                     max_iter=max_iter, decimals=decimals)
        ref_labels = np.concatenate(reference.labels)
        baselines.append(float(adjusted_rand_score(best, ref_labels)))
        done += 1
        if progress:
            progress("dp", done, total)
        for eps in epsilons:
            dp = DPConfig(eps, delta, max_iter, RFM_LOWER, RFM_UPPER)
            noisy = run_joint_kmeans(parts, k, mode="plain", init="random", dp=dp,
                                     max_iter=max_iter, decimals=decimals, random_state=seed)
            labels = np.concatenate(noisy.labels)
            rows.append({
                "seed": seed, "epsilon": eps, "delta": delta,
                "noise_multiplier": dp.noise_multiplier,
                "epsilon_spent": dp.epsilon_spent(),
                "ari_vs_same_init_without_dp": float(adjusted_rand_score(ref_labels, labels)),
                "ari_vs_sklearn_kmeanspp_pooled": float(adjusted_rand_score(best, labels)),
                "max_centroid_error_vs_same_init":
                    float(np.abs(noisy.centroids - reference.centroids).max()),
            })
            done += 1
            if progress:
                progress("dp", done, total)
    return {"owners": owners, "customers_per_owner": customers, "k": k, "data": data,
            "iterations": max_iter, "delta": delta, "bounds": [RFM_LOWER, RFM_UPPER],
            "ari_without_dp_vs_sklearn_kmeanspp_pooled": baselines, "rows": rows}


def plot_dp_bench(payload: dict[str, Any], path: Path) -> Path:
    """ARI against epsilon (median and range over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    eps = sorted({r["epsilon"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in (("ari_vs_same_init_without_dp", "vs the same run without DP"),
                       ("ari_vs_sklearn_kmeanspp_pooled", "vs scikit-learn k-means++, pooled")):
        vals = [[r[key] for r in rows if r["epsilon"] == e] for e in eps]
        med = [float(np.median(v)) for v in vals]
        ax.plot(eps, med, marker="o", label=label)
        ax.fill_between(eps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2)
    baseline = payload.get("ari_without_dp_vs_sklearn_kmeanspp_pooled")
    if baseline:
        ax.axhline(float(np.median(baseline)), color="grey", linestyle="--", linewidth=1,
                   label="without DP (same init) vs scikit-learn k-means++")
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(f"ε (whole run, δ = {payload['delta']:g})")
    ax.set_ylabel("adjusted Rand index")
    ax.set_title(f"DP joint k-means: {payload['owners']} owners × "
                 f"{payload['customers_per_owner']:,} customers, {payload['iterations']} "
                 "iterations")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
