"""The original paper's experiments, for ``vhe`` (seed mode) and ``ckks`` (protocol 4.1).

The original system measured encryption time and clustering time against (a) plaintext bit
length, (b) ciphertext bit length, (c) the number of customers and (d) the number of
clusters k. :func:`run_seed_experiments` repeats all four for both schemes, with
scikit-learn's plaintext :class:`~sklearn.cluster.KMeans` timed in the same run, and writes
``seed_experiments.json`` plus one PNG per experiment.

Data: the project's synthetic mall (:func:`cipherseg.analytics.synthetic.
generate_mall_transactions`) → RFM → log-standardised (:class:`~cipherseg.analytics.rfm.
RFMScaler`), encoded as the original did: integers ×10^n with one n for all features (n = 2
unless the experiment varies it). Every scheme clusters the same quantised numbers from the
same k-means++ initial centres (scikit-learn's, seeded), with ``tol = 0`` and the same
``max_iter`` cap, single process (scikit-learn limited to one thread); times are the best of
``repeats`` runs (the machine is shared: interference only adds time).

* **vhe**: encryption = the owner's secret-key encryption of all customers (the protocol's);
  ``encrypt_keyswitch_s`` also records Zhou–Wornell's public form ``c = M·(w·x)*``.
  Clustering = everything after encryption (upload, the centre's per-feature linear
  transformations, iterations, decryptions).
* **ckks**: encryption = the owner's encryption of the column-packed blocks; clustering =
  everything after it (protocol 4.1, including its per-iteration decryptions).
* (a) varies n = 1..6 decimals (the plaintext bits follow from the data); (b) varies log2 q
  for vhe and the CKKS modulus chain (N = 8192 with 3 or 4 primes, N = 16384 with 5 or 6);
  (c) n customers 1 000 → 100 000 log-spaced; (d) k = 2..10.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.progress import Progress


@dataclass(frozen=True)
class SeedBenchConfig:
    """What to sweep. ``quick`` keeps the whole run under two minutes on two cores."""

    quick: bool
    seed: int
    base_n: int
    base_k: int
    base_decimals: int
    max_iter: int
    repeats: int
    decimals_values: tuple[int, ...]
    vhe_bits_values: tuple[int, ...]  # 0: the smallest valid modulus
    ckks_chains: tuple[tuple[int, tuple[int, ...], int], ...]  # (N, primes, scale bits)
    n_values: tuple[int, ...]
    k_values: tuple[int, ...]

    @classmethod
    def create(cls, quick: bool, seed: int = 0) -> SeedBenchConfig:
        """The quick (CI) or full sweep.

        >>> SeedBenchConfig.create(True).n_values
        (1000, 2154, 4642)
        """
        full_n = tuple(int(v) for v in np.rint(np.logspace(3, 5, 7)))
        if quick:
            return cls(True, seed, 2000, 4, 2, 8, 1, (1, 3, 6), (0, 64, 128),
                       ((8192, (60, 40, 60), 40), (8192, (60, 40, 40, 60), 40)),
                       full_n[:3], (2, 5, 8))
        return cls(False, seed, 10_000, 4, 2, 20, 3, (1, 2, 3, 4, 5, 6),
                   (0, 64, 80, 96, 128, 192, 256),
                   ((8192, (40, 30, 40), 30), (8192, (60, 40, 60), 40),
                    (8192, (60, 40, 40, 60), 40), (16384, (60, 40, 40, 40, 60), 40),
                    (16384, (60, 50, 50, 50, 50, 60), 50)),
                   full_n, tuple(range(2, 11)))


def rfm_features(n: int, seed: int) -> npt.NDArray[np.float64]:
    """Log-standardised RFM features of ``n`` synthetic mall customers (seeded)."""
    from cipherseg.analytics.rfm import RFMScaler, compute_rfm
    from cipherseg.analytics.synthetic import generate_mall_transactions

    feats = compute_rfm(generate_mall_transactions(n, seed=seed)).features
    return np.asarray(RFMScaler(log=True).fit_transform(feats), dtype=np.float64)


def _best(values: list[float]) -> float:
    """Best of the repeats: the machine is shared, and interference only ever adds time."""
    return float(min(values))


def measure_point(x: npt.NDArray[np.float64], k: int, decimals: int, cfg: SeedBenchConfig, *,
                  vhe_bits: int = 0, ckks: tuple[int, tuple[int, ...], int] | None = None,
                  schemes: tuple[str, ...] = ("vhe", "ckks", "sklearn")) -> dict[str, Any]:
    """Time the three clusterings of ``x`` quantised at ``10^-decimals`` from one init."""
    from sklearn.cluster import KMeans, kmeans_plusplus
    from sklearn.metrics import adjusted_rand_score
    from threadpoolctl import threadpool_limits

    from cipherseg.analytics.estimators import normalising_scale
    from cipherseg.protocols.seed.params import seed_params
    from cipherseg.protocols.seed.run import run_seed_kmeans
    from cipherseg.schemes.vhe import VHEContext
    from cipherseg.schemes.vhe_keys import VHESecretKey

    scale = 10**decimals
    x_int = np.rint(x * scale).astype(np.int64)
    xq = x_int / scale
    init, _ = kmeans_plusplus(xq, k, random_state=cfg.seed)
    out: dict[str, Any] = {"customers": len(x), "k": k, "decimals": decimals,
                           "plaintext_bits": int(np.abs(x_int).max()).bit_length() + 1}
    ref_labels = None
    with threadpool_limits(1):  # one thread, like the encrypted runs. Always runs: it is
        # the reference for every ARI.
        KMeans(k, init=init, n_init=1, max_iter=1, algorithm="lloyd").fit(xq)  # warm-up
        times = []
        for _ in range(cfg.repeats):
            t = time.perf_counter()
            ref = KMeans(k, init=init, n_init=1, max_iter=cfg.max_iter, tol=0.0,
                         algorithm="lloyd").fit(xq)
            times.append(time.perf_counter() - t)
        ref_labels = ref.labels_
        out["sklearn"] = {"cluster_s": _best(times), "n_iter": int(ref.n_iter_)}
    if "vhe" in schemes:
        max_abs = int(max(np.abs(x_int).max(), np.ceil(np.abs(init * scale).max())))
        params = seed_params(len(x), x.shape[1], max_abs,
                             min_ciphertext_bits=vhe_bits or 16)
        enc, clu, ks_enc = [], [], []
        res = None
        for r in range(cfg.repeats):
            res = run_seed_kmeans(x_int, init * scale, max_iter=cfg.max_iter, tol=0.0,
                                  absolute_tol=True, params=params, rng=cfg.seed + r)
            owner = res.report["seconds"]["owner"]
            enc.append(owner["encrypt"])
            clu.append(res.report["seconds_total"] - owner["encrypt"] - owner["keygen"])
            key = VHESecretKey.generate(params, rng=cfg.seed + r)
            pk = key.encryption_key()
            t = time.perf_counter()
            VHEContext(params).public_encrypt(pk, x_int)
            ks_enc.append(time.perf_counter() - t)
        assert res is not None
        out["vhe"] = {"encrypt_s": _best(enc), "cluster_s": _best(clu),
                      "encrypt_keyswitch_s": _best(ks_enc), "n_iter": res.n_iter,
                      "ciphertext_bits": params.ciphertext_bits, "w_bits": params.w.bit_length(),
                      "backend": params.backend, "plaintext_bits": params.plaintext_bits,
                      "mb_total": (res.report["bytes_to_centre"]
                                   + res.report["bytes_to_owner"]) / 1e6,
                      "ari_vs_sklearn": float(adjusted_rand_score(ref_labels, res.labels))}
    if "ckks" in schemes:
        from cipherseg.engine.local import LocalExecutor
        from cipherseg.protocols.outsourced.centre import ComputeCentre
        from cipherseg.protocols.outsourced.owner import DataOwner
        from cipherseg.protocols.party import PartyLink
        from cipherseg.schemes.ckks import CkksParams

        n_poly, primes, scale_bits = ckks or (8192, (60, 40, 60), 40)
        cparams = CkksParams(n_poly, primes, scale_bits)
        sigma = normalising_scale(xq)
        enc, clu = [], []
        run = None
        for r in range(cfg.repeats):
            ex = LocalExecutor(1)
            try:
                centre = ComputeCentre(executor=ex, random_state=cfg.seed + r)
                owner_party = DataOwner(params=cparams, executor=ex, random_state=cfg.seed + r)
                t = time.perf_counter()
                run = owner_party.run_kmeans(xq / sigma, k, PartyLink(centre, sender="owner"),
                                             max_iter=cfg.max_iter, tol=0.0, init=init / sigma)
                total = time.perf_counter() - t
            finally:
                ex.close()
            secs = run.seconds["owner"]
            enc.append(secs.get("encrypt", 0.0))
            clu.append(total - secs.get("encrypt", 0.0) - secs.get("keygen", 0.0))
        assert run is not None
        out["ckks"] = {"encrypt_s": _best(enc), "cluster_s": _best(clu), "n_iter": run.n_iter,
                       "poly_modulus_degree": n_poly, "coeff_mod_bit_sizes": list(primes),
                       "ciphertext_bits": int(sum(primes)),
                       "mb_total": (run.bytes_to_centre + run.bytes_to_owner) / 1e6,
                       "ari_vs_sklearn": float(adjusted_rand_score(ref_labels, run.labels))}
    return out


EXPERIMENTS = {
    "plaintext_bits": ("plaintext bits l (bits; decimals n = 1..6)", False),
    "ciphertext_bits": ("ciphertext modulus log2 q (bits)", False),
    "customers": ("customers (count, log scale)", True),
    "clusters": ("clusters k", False),
}


def run_seed_experiments(out_dir: str | Path, *, quick: bool = False, seed: int = 0,
                         progress: Progress | None = None) -> dict[str, Any]:
    """Run the four experiments, write JSON and PNGs to ``out_dir``; return the results."""
    from cipherseg.schemes.vhe import VHE_INSECURE_WARNING

    cfg = SeedBenchConfig.create(quick, seed)
    notify = progress or (lambda stage, done, total: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data: dict[int, npt.NDArray[np.float64]] = {}

    def features(n: int) -> npt.NDArray[np.float64]:
        if n not in data:
            data[n] = rfm_features(n, cfg.seed)
        return data[n]

    plan: list[tuple[str, dict[str, Any]]] = []
    for dec in cfg.decimals_values:
        plan.append(("plaintext_bits", {"decimals": dec}))
    for bits in cfg.vhe_bits_values:
        plan.append(("ciphertext_bits", {"vhe_bits": bits, "schemes": ("vhe", "sklearn")}))
    for chain in cfg.ckks_chains:
        plan.append(("ciphertext_bits", {"ckks": chain, "schemes": ("ckks", "sklearn")}))
    for n in cfg.n_values:
        plan.append(("customers", {"n": n}))
    for k in cfg.k_values:
        plan.append(("clusters", {"k": k}))

    results: dict[str, list[dict[str, Any]]] = {name: [] for name in EXPERIMENTS}
    started = time.perf_counter()
    # Warm-up (imports, first-call allocations) so that the first point is not penalised.
    warm = replace(cfg, repeats=1, max_iter=2)
    measure_point(features(cfg.n_values[0])[:500], 2, cfg.base_decimals, warm)
    for i, (name, opts) in enumerate(plan):
        notify(name, i, len(plan))
        n = int(opts.get("n", cfg.base_n))
        row = measure_point(features(n), int(opts.get("k", cfg.base_k)),
                            int(opts.get("decimals", cfg.base_decimals)), cfg,
                            vhe_bits=int(opts.get("vhe_bits", 0)), ckks=opts.get("ckks"),
                            schemes=opts.get("schemes", ("vhe", "ckks", "sklearn")))
        results[name].append(row)
    notify("done", len(plan), len(plan))
    report = {
        "warning": VHE_INSECURE_WARNING,
        "config": asdict(cfg),
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "machine": platform.machine(), "system": platform.system()},
        "seconds_total": time.perf_counter() - started,
        "experiments": results,
    }
    (out / "seed_experiments.json").write_text(json.dumps(report, indent=2))
    report["plots"] = [str(p) for p in plot_seed_experiments(report, out)]
    return report


def _xs(name: str, rows: list[dict[str, Any]], scheme: str) -> list[float]:
    if name == "plaintext_bits":
        return [r["plaintext_bits"] for r in rows if scheme in r]
    if name == "ciphertext_bits":
        return [r[scheme]["ciphertext_bits"] for r in rows if scheme in r]
    if name == "customers":
        return [r["customers"] for r in rows if scheme in r]
    return [r["k"] for r in rows if scheme in r]


def plot_seed_experiments(report: dict[str, Any], out: Path) -> list[Path]:
    """One PNG per experiment: encryption time (left) and clustering time (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"vhe": ("tab:red", "o", "vhe (seed mode, Zhou-Wornell; BROKEN)"),
              "ckks": ("tab:blue", "s", "ckks (protocol 4.1)"),
              "sklearn": ("black", "x", "scikit-learn KMeans (plaintext)")}
    paths = []
    for name, (xlabel, logx) in EXPERIMENTS.items():
        rows = report["experiments"][name]
        if not rows:
            continue
        fig, (ax_e, ax_c) = plt.subplots(1, 2, figsize=(11, 4.2))
        for scheme in ("vhe", "ckks", "sklearn"):
            sub = [r for r in rows if scheme in r]
            if not sub:
                continue
            color, marker, label = styles[scheme]
            if scheme == "sklearn" and name == "ciphertext_bits":  # no modulus: one level
                ax_c.axhline(_best([r["sklearn"]["cluster_s"] for r in sub]), color=color,
                             linestyle=":", label=label)
                continue
            xs = _xs(name, sub, scheme)
            order = np.argsort(xs)
            xs_sorted = [xs[i] for i in order]
            if scheme != "sklearn":
                ax_e.plot(xs_sorted, [sub[i][scheme]["encrypt_s"] for i in order], marker=marker,
                          color=color, label=label)
            if scheme == "vhe":
                ax_e.plot(xs_sorted, [sub[i]["vhe"]["encrypt_keyswitch_s"] for i in order],
                          marker=marker, color=color, linestyle="--", alpha=0.7,
                          label="vhe, public form c = M(wx)*")
            ax_c.plot(xs_sorted, [sub[i][scheme]["cluster_s"] for i in order], marker=marker,
                      color=color, label=label)
            if scheme == "ckks" and name == "ciphertext_bits":
                for i in order:
                    ax_c.annotate(f"N={sub[i]['ckks']['poly_modulus_degree']}",
                                  (sub[i]["ckks"]["ciphertext_bits"], sub[i]["ckks"]["cluster_s"]),
                                  fontsize=6, xytext=(3, -9), textcoords="offset points")
        if name == "ciphertext_bits":
            for ax in (ax_e, ax_c):
                ax.axvline(64.5, color="grey", linestyle="--", linewidth=0.8)
                ax.annotate("vhe: uint64 | Python ints", (64.5, 0.02), xycoords=("data",
                            "axes fraction"), fontsize=6, color="grey", xytext=(3, 0),
                            textcoords="offset points")
        cfg = report["config"]
        for ax, what in ((ax_e, "encryption time (s)"), (ax_c, "clustering time (s)")):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(what)
            ax.set_yscale("log")
            if logx:
                ax.set_xscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        base = (f"n={cfg['base_n']:,}" if name != "customers" else "") + \
               (f" k={cfg['base_k']}" if name != "clusters" else "")
        fig.suptitle(f"{name.replace('_', ' ')}: {base.strip()}, ≤{cfg['max_iter']} Lloyd "
                     f"iterations, best of {cfg['repeats']}", fontsize=10)
        fig.tight_layout()
        path = out / f"seed_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
