"""The Bank Marketing evaluation: plaintext, encrypted, segment-based, federated and DP models.

One run (``cipherseg eval bank --json PATH``) evaluates, for each data file (``bank-full``,
``bank-additional-full``) with and without the label-leaking ``duration`` input, on one
stratified 80/20 split with fixed seeds:

* **plaintext** — scikit-learn ``LogisticRegression`` in the owner's preprocessing Pipeline;
* **encrypted** — the same model scored by the compute centre on CKKS-encrypted features
  (:class:`cipherseg.analytics.scoring.EncryptedScorer`), over the whole test split;
* **segments** — encrypted k-means (:class:`cipherseg.EncryptedKMeans`) on a sample of the
  training customers; each segment's training response rate is the score of its members;
* **federated** — FedAvg of logistic regression across simulated data owners, each training
  locally (mini-batch SGD) and only weight vectors being aggregated;
* **dp** — diffprivlib's ``LogisticRegression`` (objective perturbation, Chaudhuri et al.
  2011) at several ε, averaged over seeds.

Metrics (:mod:`cipherseg.analytics.metrics`): precision, recall and F1 of the positive class
("subscribed") and support-weighted over both classes, accuracy, ROC AUC. A customer is
predicted positive when the model's probability is ≥ 0.5 (score ≥ 0; for segments, a segment
response rate ≥ 0.5). The models live in :mod:`cipherseg.analytics` (``federated``,
``dp_logistic``, ``scoring``); the table and plots in :mod:`cipherseg.bench.evaluation_report`.

>>> planned_steps(EvalConfig(Path("data"), variants=("bank-full",), epsilons=(1.0,)))
13
"""

from __future__ import annotations

import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.analytics.bank import BankData, load_bank, make_logistic_pipeline, split_bank
from cipherseg.analytics.dp_logistic import make_dp_pipeline
from cipherseg.analytics.federated import (
    Aggregator,
    FedAvgConfig,
    fedavg_logistic,
    partition_owners,
    plain_sum,
)
from cipherseg.analytics.metrics import METRICS, classification_metrics, roc_points
from cipherseg.errors import ValidationError
from cipherseg.progress import Progress
from cipherseg.protocols.scoring.secure_sum import ThresholdSecureSum

# The second source's figures (precision / recall / ROC AUC on UCI Bank Marketing).
PUBLISHED: dict[str, dict[str, float]] = {
    "plaintext": {"precision": 0.93, "recall": 0.91, "roc_auc": 0.95},
    "encrypted": {"precision": 0.92, "recall": 0.90, "roc_auc": 0.94},
}
DEFAULT_EPSILONS: tuple[float, ...] = (0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


# --- segment-based targeting -----------------------------------------------------------------

def segment_response_scores(Z_train: npt.NDArray[np.float64], y_train: npt.ArrayLike,
                            Z_test: npt.NDArray[np.float64], *, n_segments: int = 8,
                            sample: int | None = 4096, max_iter: int = 15, seed: int = 0,
                            n_jobs: int | None = 1) -> tuple[npt.NDArray[np.float64],
                                                             dict[str, Any]]:
    """Encrypted k-means segments; each test customer scores its segment's response rate.

    The segments are fitted by :class:`cipherseg.EncryptedKMeans` on ``sample`` training
    customers (all if ``None``). The owner then assigns its own customers to the released
    centroids in the clear (it holds both) and computes each segment's training response
    rate. Returns the test scores and a report.
    """
    from cipherseg.analytics.estimators import EncryptedKMeans

    y = np.asarray(y_train)
    rng = np.random.default_rng(seed)
    rows = np.arange(len(Z_train))
    if sample is not None and sample < len(rows):
        rows = np.sort(rng.choice(rows, size=sample, replace=False))
    started = time.perf_counter()
    km = EncryptedKMeans(n_clusters=n_segments, random_state=seed, max_iter=max_iter,
                         n_jobs=n_jobs).fit(Z_train[rows])
    centres = km.cluster_centers_

    def assign(Z: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        d2 = (Z * Z).sum(1)[:, None] - 2 * Z @ centres.T + (centres * centres).sum(1)[None, :]
        labels: npt.NDArray[np.int64] = np.argmin(d2, axis=1)
        return labels

    train_labels = assign(Z_train)
    sizes = np.bincount(train_labels, minlength=n_segments)
    positives = np.bincount(train_labels, weights=y, minlength=n_segments)
    rate = np.where(sizes > 0, positives / np.maximum(sizes, 1), float(np.mean(y)))
    report = {
        "n_segments": n_segments, "fitted_on": len(rows), "n_iter": int(km.n_iter_),
        "segment_sizes_train": sizes.tolist(),
        "segment_response_rate": [round(float(v), 4) for v in rate],
        "kmeans_seconds": km.report_["seconds_total"],
        "seconds": time.perf_counter() - started,
    }
    return rate[assign(Z_test)], report


# --- the run --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalConfig:
    """What one evaluation run covers. Defaults: everything, within ~10 minutes on 2 cores."""

    data_dir: Path
    variants: tuple[str, ...] = ("bank-full", "bank-additional-full")
    durations: tuple[bool, ...] = (True, False)
    test_size: float = 0.2
    seed: int = 0
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    dp_seeds: int = 3
    dp_data_norm: float = 3.0
    n_owners: int = 4
    secure_aggregation: bool = True
    fedavg: FedAvgConfig = field(default_factory=FedAvgConfig)
    n_segments: int = 8
    segment_sample: int | None = 4096
    segment_max_iter: int = 10
    segment_variants: tuple[bool, ...] = (False,)
    sigmoid_bound: float | None = 6.0
    encrypted_rows: int | None = None
    n_jobs: int | None = 1
    blas_threads: int | None = 1


def variant_key(variant: str, with_duration: bool) -> str:
    """``bank-full/with-duration`` etc."""
    return f"{variant}/{'with' if with_duration else 'without'}-duration"


def planned_steps(config: EvalConfig) -> int:
    """How many steps :func:`run_bank_evaluation` reports progress over."""
    return sum(_variant_steps(config, d) for _ in config.variants for d in config.durations)


def _variant_steps(config: EvalConfig, with_duration: bool) -> int:
    """Plaintext, encrypted, gradient boosting, FedAvg, one per ε, and the optional methods."""
    return (4 + len(config.epsilons) + (config.sigmoid_bound is not None)
            + (with_duration in config.segment_variants))


def evaluate_variant(train: BankData, test: BankData, config: EvalConfig,
                     progress: Progress | None = None) -> dict[str, Any]:
    """All methods on one (file, duration) variant; see the module docstring.

    ``progress(method, done, total)`` is called as each method starts.
    """
    from cipherseg.analytics.scoring import EncryptedScorer

    steps = _variant_steps(config, train.with_duration)
    started_steps = 0

    def say(method: str) -> None:
        nonlocal started_steps
        if progress is not None:
            progress(method, started_steps, steps)
        started_steps += 1

    y = test.target
    out: dict[str, Any] = {
        "n_train": train.n_customers, "n_test": test.n_customers,
        "positive_rate_test": round(test.positive_rate, 5),
        "inputs": list(train.categorical + train.numeric),
        "methods": {}, "roc": {},
    }
    methods, roc = out["methods"], out["roc"]

    say("plaintext logistic regression")
    t0 = time.perf_counter()
    model = make_logistic_pipeline(train).fit(train.features, train.target)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain_scores = model.decision_function(test.features)
    plain_s = time.perf_counter() - t0
    methods["plaintext"] = {**classification_metrics(y, plain_scores),
                            "fit_seconds": fit_s, "score_seconds": plain_s}
    roc["plaintext"] = roc_points(y, plain_scores)
    out["n_encoded_features"] = int(model[-1].coef_.shape[1])

    say("encrypted scoring of the same model")
    rows = slice(None) if config.encrypted_rows is None else slice(0, config.encrypted_rows)
    scorer = EncryptedScorer(model)
    t0 = time.perf_counter()
    enc_scores = scorer.score(test.features.iloc[rows])
    enc_s = time.perf_counter() - t0
    ref = plain_scores[rows]
    enc_metrics = classification_metrics(y[rows], enc_scores)
    ref_metrics = classification_metrics(y[rows], ref)
    run = scorer.last_run_
    methods["encrypted"] = {
        **enc_metrics,
        "customers": len(enc_scores),
        "max_abs_score_error": float(np.max(np.abs(enc_scores - ref))),
        "max_metric_difference": max(abs(enc_metrics[k] - ref_metrics[k]) for k in METRICS),
        "prediction_flips": int(np.sum((enc_scores >= 0) != (ref >= 0))),
        "seconds": enc_s, "owner_encrypt_seconds": run.encrypt_seconds,
        "centre_seconds": run.centre_seconds, "owner_decrypt_seconds": run.decrypt_seconds,
        "bytes_to_centre": run.bytes_to_centre, "bytes_to_owner": run.bytes_to_owner,
        "customers_per_second": len(enc_scores) / enc_s,
    }
    roc["encrypted"] = roc_points(y[rows], enc_scores)

    if config.sigmoid_bound is not None:
        say("encrypted scoring with an encrypted model and the cubic sigmoid")
        hidden = EncryptedScorer(model, encrypt_model=True, sigmoid_bound=config.sigmoid_bound)
        t0 = time.perf_counter()
        proba = hidden.predict_proba(test.features.iloc[rows])[:, 1]
        sig_s = time.perf_counter() - t0
        approx = hidden.sigmoid_
        exact = 1.0 / (1.0 + np.exp(-ref))
        inside = np.abs(ref) <= config.sigmoid_bound
        hrun = hidden.last_run_
        if approx is None:  # pragma: no cover - set by predict_proba with a bound
            raise ValidationError("the scorer did not record its sigmoid approximation")
        methods["encrypted_sigmoid"] = {
            **classification_metrics(y[rows], proba, threshold=0.5),
            "customers": len(proba),
            "sigmoid_bound": config.sigmoid_bound,
            "sigmoid_max_error_on_interval": approx.max_error,
            "share_of_scores_inside_bound": float(np.mean(inside)),
            "max_abs_probability_error_inside_bound": float(
                np.max(np.abs(proba - exact)[inside])) if inside.any() else None,
            "max_abs_score_error": float(np.max(np.abs(hrun.scores - ref))),
            "seconds": sig_s, "bytes_to_centre": hrun.bytes_to_centre,
            "customers_per_second": len(proba) / sig_s,
        }

    say("reference: plaintext gradient boosting (not encrypted)")
    t0 = time.perf_counter()
    hgb = _gradient_boosting(train)
    hgb_scores = hgb.predict_proba(_as_categorical(test))[:, 1]
    methods["gradient_boosting"] = {**classification_metrics(y, hgb_scores, threshold=0.5),
                                    "seconds": time.perf_counter() - t0}
    roc["gradient_boosting"] = roc_points(y, hgb_scores)

    if train.with_duration in config.segment_variants:
        say("encrypted k-means segments")
        pre = model[:-1]
        Ztr = np.asarray(pre.transform(train.features), dtype=np.float64)
        Zte = np.asarray(pre.transform(test.features), dtype=np.float64)
        seg_scores, seg_report = segment_response_scores(
            Ztr, train.target, Zte, n_segments=config.n_segments, sample=config.segment_sample,
            max_iter=config.segment_max_iter, seed=config.seed, n_jobs=config.n_jobs)
        methods["segments"] = {**classification_metrics(y, seg_scores, threshold=0.5),
                               **seg_report}
        roc["segments"] = roc_points(y, seg_scores)

    say(f"federated averaging across {config.n_owners} owners")
    owners = partition_owners(train, config.n_owners, seed=config.seed)
    aggregator: Aggregator = plain_sum
    secure = None
    if config.secure_aggregation:
        secure = ThresholdSecureSum(config.n_owners)
        aggregator = secure
    fl_model, fl_report = fedavg_logistic(owners, config.fedavg, aggregate=aggregator)
    fl_scores = fl_model.decision_function(test.features)
    agg_report = secure.report() if secure is not None else {
        "aggregation": "plaintext sum (no secure aggregation)"}
    methods["federated"] = {**classification_metrics(y, fl_scores), **fl_report, **agg_report}
    roc["federated"] = roc_points(y, fl_scores)

    dp: dict[str, Any] = {}
    for eps in config.epsilons:
        say(f"differential privacy, epsilon={eps:g}")
        runs = []
        for s in range(config.dp_seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning under heavy noise
                m = make_dp_pipeline(train, eps, data_norm=config.dp_data_norm,
                                     seed=config.seed * 1000 + s)
                m.fit(train.features, train.target)
            scores = m.decision_function(test.features)
            runs.append(classification_metrics(y, scores))
            if s == 0:
                roc[f"dp_eps_{eps:g}"] = roc_points(y, scores)
        dp[f"{eps:g}"] = {
            "epsilon": eps,
            "mean": {k: float(np.mean([r[k] for r in runs])) for k in METRICS},
            "std": {k: float(np.std([r[k] for r in runs])) for k in METRICS},
            "seeds": config.dp_seeds,
        }
    methods["dp"] = {"data_norm": config.dp_data_norm, "by_epsilon": dp}
    return out


def _as_categorical(data: BankData) -> Any:
    frame = data.features.copy()
    for name, cats in zip(data.categorical, data.categories, strict=True):
        frame[name] = frame[name].astype("category").cat.set_categories(cats)
    return frame


def _gradient_boosting(train: BankData) -> Any:
    """Plaintext reference only: a stronger model than LR, to read the published figures."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0
                                          ).fit(_as_categorical(train), train.target)


def run_bank_evaluation(config: EvalConfig, progress: Progress | None = None
                        ) -> dict[str, Any]:
    """Evaluate every configured variant; returns the JSON-ready result.

    BLAS/OpenMP pools are limited to ``config.blas_threads`` threads (default 1): on a small
    shared machine, multi-threaded BLAS in L-BFGS slowed the DP fits five-fold.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=config.blas_threads):
        return _run_bank_evaluation(config, progress)


def _run_bank_evaluation(config: EvalConfig, progress: Progress | None) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {
        "config": {
            "data_dir": str(config.data_dir), "variants": list(config.variants),
            "durations": list(config.durations), "test_size": config.test_size,
            "seed": config.seed, "epsilons": list(config.epsilons),
            "dp_seeds": config.dp_seeds, "dp_data_norm": config.dp_data_norm,
            "n_owners": config.n_owners, "fedavg": asdict(config.fedavg),
            "secure_aggregation": config.secure_aggregation,
            "n_segments": config.n_segments, "segment_sample": config.segment_sample,
            "segment_max_iter": config.segment_max_iter,
            "segment_variants": ["with duration" if d else "without duration"
                                 for d in config.segment_variants],
            "sigmoid_bound": config.sigmoid_bound,
            "encrypted_rows": config.encrypted_rows, "blas_threads": config.blas_threads,
        },
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "published": PUBLISHED,
        "variants": {},
    }
    total, offset = planned_steps(config), 0
    for variant in config.variants:
        for with_duration in config.durations:
            key = variant_key(variant, with_duration)
            data = load_bank(config.data_dir, variant, with_duration=with_duration)
            train, test = split_bank(data, test_size=config.test_size, seed=config.seed)

            def relay(method: str, done: int, _steps: int, key: str = key,
                      offset: int = offset) -> None:
                if progress is not None:
                    progress(f"{key}: {method}", offset + done, total)

            results["variants"][key] = evaluate_variant(train, test, config, relay)
            offset += _variant_steps(config, with_duration)
    if progress is not None:
        progress("done", total, total)
    results["comparison"] = compare_with_published(results)
    results["seconds_total"] = time.perf_counter() - started
    return results


def compare_with_published(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Distance of each variant × metric convention from the published plaintext figures.

    Returns rows sorted by the largest absolute gap (precision, recall, ROC AUC).
    """
    rows = []
    for key, res in results["variants"].items():
        for label in ("plaintext", "encrypted", "gradient_boosting"):
            if label not in res["methods"]:
                continue
            m = res["methods"][label]
            for convention, (p, r) in {
                "positive class": ("precision", "recall"),
                "support-weighted": ("precision_weighted", "recall_weighted"),
            }.items():
                pub = PUBLISHED["encrypted" if label == "encrypted" else "plaintext"]
                gaps = {"precision": m[p] - pub["precision"], "recall": m[r] - pub["recall"],
                        "roc_auc": m["roc_auc"] - pub["roc_auc"]}
                rows.append({"variant": key, "model": label.replace("_", " "),
                             "metrics": convention,
                             "precision": round(m[p], 4), "recall": round(m[r], 4),
                             "roc_auc": round(m["roc_auc"], 4),
                             "max_abs_gap": round(max(abs(g) for g in gaps.values()), 4)})
    rows.sort(key=lambda row: row["max_abs_gap"])
    return rows
