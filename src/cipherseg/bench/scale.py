"""Benchmark: how encrypted k-means (protocol 4.1) grows with customers and workers.

For each customer count the synthetic mall's transactions are generated, written as
partitioned Parquet and turned into RFM features twice — pandas in memory, and Dask DataFrame
from the files (:mod:`cipherseg.analytics.rfm_dask`) — in child processes, so the data
preparation's memory is reported apart from the protocol's. Then the encrypted k-means runs
with the compute centre on 1, 2, … workers (a Dask LocalCluster, a remote scheduler or the
local process pool) and the data owner on a local pool of as many processes, interleaving the
worker counts for each size so that the speed-up is measured in the same run under the same
load. Every run reports seconds per party and stage, time inside the centre's block tasks
(wall and CPU), bytes exchanged, the peak RSS of every process, and the ARI against
scikit-learn's Lloyd from the same initial centres.

The machine is shared: ``load_average`` is recorded before and after, medians are taken over
``repeats``, and CPU seconds inside the block tasks show how much of the wall time the workers
actually computed.

>>> cfg = ScaleConfig(sizes=[100_000, 1_000_000], workers=[1, 2])
>>> (cfg.engine, cfg.k, cfg.iterations)
('dask', 4, 10)
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cipherseg.engine.base import Executor
from cipherseg.engine.memory import peak_rss_bytes, reset_peak_rss
from cipherseg.progress import Progress

_MB = 1e6


@dataclass
class ScaleConfig:
    """What to measure (see ``cipherseg bench scale --help``)."""

    sizes: list[int]
    workers: list[int]
    engine: str = "dask"
    scheduler: str | None = None
    k: int = 4
    iterations: int = 10
    seed: int = 0
    repeats: int = 1
    cache_dir: Path | None = None
    parquet_partitions: int = 16
    blocks_per_task: int = 32
    extra: dict[str, Any] = field(default_factory=dict)


# --- data preparation (child processes) ------------------------------------------------------

def _generate(n: int, seed: int, parquet_dir: str, partitions: int, out: str) -> None:
    """Child 1: transactions → partitioned Parquet, and the pandas RFM reference."""
    from cipherseg.analytics.rfm import compute_rfm
    from cipherseg.analytics.synthetic import generate_mall_transactions

    t = time.perf_counter()
    tx = generate_mall_transactions(n, seed=seed)
    t_gen = time.perf_counter() - t
    # Files hold plain text ids (a categorical would carry every id into every partition).
    tx = tx.astype({"customer_id": "str", "invoice_id": "str"})
    t = time.perf_counter()
    os.makedirs(parquet_dir, exist_ok=True)
    bounds = np.linspace(0, len(tx), partitions + 1).astype(int)
    for i in range(partitions):
        tx.iloc[bounds[i]:bounds[i + 1]].to_parquet(f"{parquet_dir}/part-{i:03d}.parquet")
    t_write = time.perf_counter() - t
    t = time.perf_counter()
    rfm = compute_rfm(tx)
    t_rfm = time.perf_counter() - t
    f = rfm.features
    np.savez(out, index=f.index.to_numpy(dtype=str), values=f.to_numpy(),
             info=np.array([t_gen, t_write, t_rfm, len(tx), peak_rss_bytes()], dtype=float))


def _rfm_dask(parquet_dir: str, workers: int, out: str) -> None:
    """Child 2: RFM with Dask DataFrame from the Parquet files (the owner's own scheduler)."""
    import dask

    from cipherseg.analytics.rfm_dask import compute_rfm_dask

    reset_peak_rss()
    t = time.perf_counter()
    with dask.config.set(num_workers=workers):
        rfm = compute_rfm_dask(parquet_dir, scheduler="threads")
    t_rfm = time.perf_counter() - t
    f = rfm.features
    np.savez(out, index=f.index.to_numpy(dtype=str), values=f.to_numpy(),
             info=np.array([t_rfm, peak_rss_bytes()], dtype=float))


def _in_child(fn: Callable[..., None], *args: Any) -> None:
    # Fork before any cluster or pool exists in this process; the child's memory goes with it.
    # Import what the children need first, so that each child does not import it again.
    import cipherseg.analytics.rfm_dask
    import cipherseg.analytics.synthetic  # noqa: F401

    proc = multiprocessing.get_context("fork").Process(target=fn, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"data preparation failed in a child process ({fn.__name__}, "
                           f"exit code {proc.exitcode})")


def prepare_features(n: int, seed: int, cache_dir: Path, partitions: int = 16,
                     workers: int = 2) -> tuple[np.ndarray, dict[str, Any]]:
    """Quantised, standardised log-RFM features of ``n`` synthetic customers, and how long
    the preparation took on each path; cached in ``cache_dir``."""
    from cipherseg.analytics.rfm import RFMScaler
    from cipherseg.encoding import FixedPointEncoder

    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = cache_dir / f"mall-{n}-seed{seed}-p{partitions}"
    pandas_out, dask_out = f"{stem}-pandas.npz", f"{stem}-dask.npz"
    parquet_dir = f"{stem}-parquet"
    cached = os.path.exists(pandas_out) and os.path.exists(dask_out)
    if not cached:
        _in_child(_generate, n, seed, parquet_dir, partitions, pandas_out)
        _in_child(_rfm_dask, parquet_dir, workers, dask_out)
    ref, dsk = np.load(pandas_out), np.load(dask_out)
    if not np.array_equal(ref["index"], dsk["index"]):
        raise RuntimeError("Dask RFM found other customers than pandas RFM")
    rel = np.abs(dsk["values"] - ref["values"]) / np.maximum(np.abs(ref["values"]), 1e-300)
    t_gen, t_write, t_rfm, lines, gen_peak = ref["info"]
    t_dask, dask_peak = dsk["info"]
    import pandas as pd

    feats = pd.DataFrame(ref["values"], columns=["recency", "frequency", "monetary"])
    X = FixedPointEncoder(2).quantise(np.asarray(RFMScaler(log=True).fit_transform(feats)))
    info = {
        "customers": len(X), "transaction_lines": int(lines), "from_cache": cached,
        "parquet_partitions": partitions,
        "seconds_generate": t_gen, "seconds_write_parquet": t_write,
        "seconds_rfm_pandas_in_memory": t_rfm, "seconds_rfm_dask_from_parquet": t_dask,
        "rfm_dask_max_relative_difference": float(rel.max()),
        "peak_rss_mb_generator_and_pandas_rfm": gen_peak / _MB,
        "peak_rss_mb_rfm_dask": dask_peak / _MB,
    }
    return X, info


# --- protocol runs -----------------------------------------------------------------------

def _make_centre_executor(cfg: ScaleConfig, workers: int) -> Executor:
    if cfg.engine == "dask":
        from cipherseg.engine.dask import DaskExecutor

        return DaskExecutor(cfg.scheduler, n_workers=workers,
                            blocks_per_task=cfg.blocks_per_task)
    from cipherseg.engine.local import LocalExecutor

    return LocalExecutor(workers, blocks_per_task=cfg.blocks_per_task)


def _stats(ex: Executor) -> dict[str, dict[str, float]]:
    stats = getattr(ex, "stats", {})
    return {k: v.as_dict() for k, v in stats.items()}


def _diff(after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]
          ) -> dict[str, dict[str, float]]:
    out = {}
    for stage, d in after.items():
        b = before.get(stage, {})
        out[stage] = {k: v - b.get(k, 0.0) for k, v in d.items()}
    return out


def _release_free_memory() -> None:
    """Give memory freed by earlier runs back to the OS (glibc), so that this run's peak RSS
    starts from what the process really holds."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def run_once(X: np.ndarray, cfg: ScaleConfig, centre_ex: Executor, workers: int,
             progress: Progress | None = None) -> dict[str, Any]:
    """One encrypted k-means (k-means++ init, ``cfg.iterations`` Lloyd iterations)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from cipherseg.analytics.estimators import normalising_scale
    from cipherseg.engine.local import LocalExecutor
    from cipherseg.protocols.outsourced.centre import ComputeCentre
    from cipherseg.protocols.outsourced.owner import DataOwner
    from cipherseg.protocols.party import PartyLink

    sigma = normalising_scale(X)
    Xn = X / sigma
    owner_ex = LocalExecutor(workers, blocks_per_task=cfg.blocks_per_task)
    centre = ComputeCentre(executor=centre_ex, random_state=cfg.seed)
    owner = DataOwner(executor=owner_ex, random_state=cfg.seed + 1)
    link = PartyLink(centre, sender="owner")
    _release_free_memory()
    reset_peak_rss()
    if hasattr(centre_ex, "reset_worker_peak_rss"):
        centre_ex.reset_worker_peak_rss()
    before = _stats(centre_ex)
    centre_ex.set_progress(None if progress is None
                           else (lambda s, d, t: progress(f"centre:{s}", d, t)))
    load_before = os.getloadavg()
    t = time.perf_counter()
    cpu = time.process_time()
    try:
        run = owner.run_kmeans(Xn, cfg.k, link, max_iter=cfg.iterations, tol=0.0,
                               progress=progress)
    finally:
        centre_ex.set_progress(None)
    wall = time.perf_counter() - t
    client_cpu = time.process_time() - cpu
    owner_peaks = [peak_rss_bytes(pid) for pid in owner_ex.worker_pids()]
    owner_ex.close()
    peaks: dict[str, float] = {"owner_and_centre_front (this process)": peak_rss_bytes() / _MB}
    for i, b in enumerate(owner_peaks):
        peaks[f"owner pool process {i}"] = b / _MB
    if hasattr(centre_ex, "worker_peak_rss"):
        for i, (_, b) in enumerate(centre_ex.worker_peak_rss().items()):
            peaks[f"centre worker {i}"] = b / _MB
    elif hasattr(centre_ex, "worker_pids"):
        for i, pid in enumerate(centre_ex.worker_pids()):
            peaks[f"centre pool process {i}"] = peak_rss_bytes(pid) / _MB
    ref = KMeans(cfg.k, init=run.init_centers, n_init=1, max_iter=cfg.iterations, tol=0.0,
                 algorithm="lloyd").fit(Xn)
    centre_s = run.seconds["centre"]
    owner_s = run.seconds["owner"]
    return {
        "customers": len(X), "workers": workers, "n_blocks": run.n_blocks,
        "n_iter": run.n_iter, "seconds_total": wall,
        "seconds_centre": float(sum(centre_s.values())),
        "seconds_owner": float(sum(owner_s.values())),
        "seconds_by_party_and_stage": run.seconds,
        "client_process_cpu_seconds": client_cpu,
        "centre_block_tasks": _diff(_stats(centre_ex), before),
        "mb_to_centre": run.bytes_to_centre / _MB, "mb_to_owner": run.bytes_to_owner / _MB,
        "mb_per_iteration_mean": float(np.mean(run.bytes_per_iteration)) / _MB
        if run.bytes_per_iteration else 0.0,
        "peak_rss_mb": peaks,
        "ari_vs_sklearn": float(adjusted_rand_score(ref.labels_, run.labels)),
        "max_centroid_error": float(np.abs(ref.cluster_centers_ - run.centers).max() * sigma),
        "load_average_before": load_before[0], "load_average_after": os.getloadavg()[0],
    }


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _task_cpu(r: dict[str, Any]) -> float:
    return float(sum(s["task_cpu_seconds"] for s in r["centre_block_tasks"].values()))


def _outside_tasks(r: dict[str, Any]) -> float:
    """Centre seconds outside the rounds of block tasks (messages, upload, the front's work)."""
    rounds = sum(s["wall_seconds"] for s in r["centre_block_tasks"].values())
    return max(0.0, float(r["seconds_centre"]) - float(rounds))


def summarise(runs: list[dict[str, Any]], cfg: ScaleConfig) -> dict[str, Any]:
    """Medians per (size, workers), speed-ups measured pairwise in the same repeat, growth.

    Besides the measured speed-up, ``centre_stages_projected_free_cores`` estimates it on
    otherwise idle cores: (CPU seconds inside the block tasks ÷ workers + centre seconds
    outside the task rounds), from each run's own measurements (needs per-task statistics,
    i.e. the Dask engine). Indicative only: on a shared machine CPU seconds themselves grow
    with contention (hyper-threads, caches), so it can even exceed the worker ratio.
    """
    out: dict[str, Any] = {"by_size_and_workers": [], "speedup": [], "growth": []}
    for n in cfg.sizes:
        for w in cfg.workers:
            rs = [r for r in runs if r["customers_requested"] == n and r["workers"] == w]
            if not rs:
                continue
            out["by_size_and_workers"].append({
                "customers": n, "workers": w, "runs": len(rs),
                "seconds_total_median": _median([r["seconds_total"] for r in rs]),
                "seconds_centre_median": _median([r["seconds_centre"] for r in rs]),
                "seconds_owner_median": _median([r["seconds_owner"] for r in rs]),
                "peak_rss_mb_max": max(max(r["peak_rss_mb"].values()) for r in rs),
                "ari_vs_sklearn_min": min(r["ari_vs_sklearn"] for r in rs),
                "centre_task_cpu_seconds_median": _median([_task_cpu(r) for r in rs]),
                "centre_outside_tasks_seconds_median": _median([_outside_tasks(r) for r in rs]),
            })
        lo, hi = min(cfg.workers), max(cfg.workers)
        if lo != hi:
            pairs = [(a, b) for a in runs for b in runs
                     if a["customers_requested"] == b["customers_requested"] == n
                     and a["workers"] == lo and b["workers"] == hi and a["repeat"] == b["repeat"]]
            if pairs:
                out["speedup"].append({
                    "customers": n, "from_workers": lo, "to_workers": hi,
                    "centre_stages_median": _median([a["seconds_centre"] / b["seconds_centre"]
                                                     for a, b in pairs]),
                    "total_median": _median([a["seconds_total"] / b["seconds_total"]
                                             for a, b in pairs]),
                    "centre_stages_each_repeat": [a["seconds_centre"] / b["seconds_centre"]
                                                  for a, b in pairs],
                    "centre_stages_projected_free_cores": _median([
                        (_task_cpu(a) / lo + _outside_tasks(a))
                        / (_task_cpu(b) / hi + _outside_tasks(b))
                        for a, b in pairs]) if _task_cpu(pairs[0][0]) > 0 else None,
                })
    small, large = min(cfg.sizes), max(cfg.sizes)
    if small != large:
        for w in cfg.workers:
            med = {row["customers"]: row for row in out["by_size_and_workers"]
                   if row["workers"] == w}
            if small in med and large in med:
                ratio = med[large]["seconds_total_median"] / med[small]["seconds_total_median"]
                out["growth"].append({
                    "workers": w, "from_customers": small, "to_customers": large,
                    "time_ratio": ratio, "size_ratio": large / small,
                    "relative_to_linear": ratio / (large / small),
                })
    out["peak_rss_mb_max_any_process"] = max(
        (max(r["peak_rss_mb"].values()) for r in runs), default=0.0)
    return out


def run_scale_bench(cfg: ScaleConfig, progress: Any = None) -> dict[str, Any]:
    """Prepare data for every size, then run every (repeat, size, workers) combination."""
    cache = cfg.cache_dir or Path(tempfile.gettempdir()) / "cipherseg-bench-scale"
    data: dict[int, np.ndarray] = {}
    prep: list[dict[str, Any]] = []
    for n in cfg.sizes:
        if progress is not None:
            progress.stage(f"data-{n}", f"data for {n:,} customers (generate, Parquet, RFM)")
        # About 800 000 transaction lines (50 000 customers) per Parquet file, at most 16.
        parts = min(cfg.parquet_partitions, max(1, n // 50_000))
        X, info = prepare_features(n, cfg.seed, cache, parts, max(cfg.workers))
        data[n] = X
        prep.append(info)
        if progress is not None:
            progress.done(f"data-{n}")
    executors: dict[int, Executor] = {}
    runs: list[dict[str, Any]] = []
    load_start = os.getloadavg()
    total_runs = cfg.repeats * len(cfg.sizes) * len(cfg.workers)
    callback = None if progress is None else progress.callback
    try:
        for w in cfg.workers:
            executors[w] = _make_centre_executor(cfg, w)
        done = 0
        for rep in range(cfg.repeats):
            for n in cfg.sizes:
                order = cfg.workers if rep % 2 == 0 else list(reversed(cfg.workers))
                for w in order:
                    if callback is not None:
                        callback("runs", done, total_runs)
                    r = run_once(data[n], cfg, executors[w], w, callback)
                    r.update(repeat=rep, customers_requested=n)
                    runs.append(r)
                    done += 1
                    if callback is not None:
                        callback("runs", done, total_runs)
    finally:
        for ex in executors.values():
            ex.close()
    return {
        "config": {"sizes": cfg.sizes, "workers": cfg.workers, "engine": cfg.engine,
                   "scheduler": cfg.scheduler, "k": cfg.k, "iterations": cfg.iterations,
                   "seed": cfg.seed, "repeats": cfg.repeats,
                   "blocks_per_task": cfg.blocks_per_task,
                   "owner_side": "local process pool with as many processes as centre workers",
                   **cfg.extra},
        "machine": {"cpu_count": os.cpu_count(), "load_average_start": load_start,
                    "load_average_end": os.getloadavg()},
        "data_preparation": prep,
        "runs": runs,
        "summary": summarise(runs, cfg),
    }


def plot_scale_bench(result: dict[str, Any], path: Path) -> Path:
    """Three panels: time vs customers (log-log, linear guide), stage breakdown of the
    largest size, and the speed-up of the most over the fewest workers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = result["summary"]
    rows = summ["by_size_and_workers"]
    workers = sorted({r["workers"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for w in workers:
        pts = sorted((r["customers"], r["seconds_total_median"]) for r in rows
                     if r["workers"] == w)
        xs, ys = zip(*pts, strict=True)
        ax.loglog(xs, ys, "o-", label=f"{w} worker(s): total")
        ax.loglog(xs, [ys[0] * x / xs[0] for x in xs], ":", color="grey")
        cs = sorted((r["customers"], r["seconds_centre_median"]) for r in rows
                    if r["workers"] == w)
        ax.loglog([c[0] for c in cs], [c[1] for c in cs], "s--", label=f"{w} worker(s): centre")
    ax.set_xlabel("customers")
    ax.set_ylabel("seconds (median)")
    ax.set_title("Time vs customers (dotted: linear)")
    ax.legend(fontsize=7)

    ax = axes[1]
    largest = max(r["customers"] for r in rows)
    stage_runs: dict[int, dict[str, list[float]]] = {}
    for r in result["runs"]:
        if r["customers_requested"] != largest:
            continue
        d = stage_runs.setdefault(r["workers"], {})
        for party, stages in r["seconds_by_party_and_stage"].items():
            for stage, sec in stages.items():
                d.setdefault(f"{party}:{stage}", []).append(sec)
    names = sorted({k for d in stage_runs.values() for k in d})
    bottom = np.zeros(len(workers))
    for name in names:
        vals = np.array([_median(stage_runs.get(w, {}).get(name, [0.0])) for w in workers])
        if vals.max() < 0.01:
            continue
        ax.bar([str(w) for w in workers], vals, bottom=bottom, label=name)
        bottom += vals
    ax.set_xlabel("centre workers (owner: as many local processes)")
    ax.set_ylabel("seconds (median)")
    ax.set_title(f"Where the time goes, {largest:,} customers")
    ax.set_ylim(0, max(bottom.max(), 1e-9) * 1.45)
    ax.legend(fontsize=6, ncol=2, loc="upper right")

    ax = axes[2]
    sp = summ["speedup"]
    if sp:
        labels = [f"{s['customers']:,}" for s in sp]
        width = 0.38
        pos = np.arange(len(labels))
        ax.bar(pos - width / 2, [s["centre_stages_median"] for s in sp], width,
               label="centre ciphertext stages")
        ax.bar(pos + width / 2, [s["total_median"] for s in sp], width, label="end to end")

        ax.axhline(1.6, color="red", linestyle="--", label="target 1.6×")
        ax.set_xticks(pos, labels)
        ax.set_title(f"Speed-up, {sp[0]['to_workers']} vs {sp[0]['from_workers']} worker(s)")
        ax.set_xlabel("customers")
        ax.legend(fontsize=7)
    fig.suptitle(f"Encrypted k-means scale-out ({result['config']['engine']}), k="
                 f"{result['config']['k']}, {result['config']['iterations']} iterations; "
                 f"load average at start {result['machine']['load_average_start'][0]:.1f} "
                 f"on {result['machine']['cpu_count']} cores", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
