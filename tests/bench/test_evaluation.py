"""Evaluation pieces: metrics, FedAvg (plain and secure), DP, the runner's outputs, the CLI."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from typer.testing import CliRunner

from cipherseg.analytics.bank import load_bank, make_logistic_pipeline, split_bank
from cipherseg.bench.evaluation import (
    METRICS,
    EvalConfig,
    FedAvgConfig,
    ThresholdSecureSum,
    classification_metrics,
    compare_with_published,
    evaluate_variant,
    fedavg_logistic,
    make_dp_pipeline,
    partition_owners,
    write_outputs,
)
from cipherseg.errors import EncodingError, ParameterError, ValidationError

DATA = Path(os.environ.get("CIPHERSEG_BANK_DATA_DIR",
                           Path(__file__).resolve().parents[2].parent / "shared" / "data"
                           / "bank-marketing"))
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"Bank Marketing data not at {DATA}")


@pytest.fixture(scope="module")
def small():
    """A stratified 5000-customer slice of bank-additional-full (without duration)."""
    data = load_bank(DATA, "bank-additional-full")
    _, part = split_bank(data, test_size=5000 / data.n_customers, seed=1)
    return split_bank(part, test_size=0.3, seed=0)


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = y + rng.normal(scale=1.2, size=400) - 0.5
    m = classification_metrics(y, s)
    pred = (s >= 0).astype(int)
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["f1_weighted"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["recall_weighted"] == pytest.approx(m["accuracy"])  # weighted recall = accuracy
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert set(m) == set(METRICS)
    assert classification_metrics(y, s, threshold=1e9)["precision"] == 0.0


def test_metrics_bad_input():
    with pytest.raises(ValidationError, match="correspond"):
        classification_metrics([0, 1], [0.0])
    with pytest.raises(ValidationError, match="both classes"):
        classification_metrics([1, 1], [0.0, 1.0])
    with pytest.raises(ValidationError, match="finite"):
        classification_metrics([0, 1], [0.0, np.inf])


def test_secure_sum_exact_and_checked():
    agg = ThresholdSecureSum(3, decimals=6, seed=b"0123456789abcdef0123")
    vectors = [np.array([1.25, -3.5, 2.0e12]), np.array([0.000001, 7.0, -1.0e12]),
               np.array([-1.25, 0.0, 5.5])]
    assert np.allclose(agg(vectors), np.sum(vectors, axis=0), rtol=0, atol=1e-6)
    assert agg.report()["secure_sums"] == 1 and agg.bytes_to_centre > 0
    with pytest.raises(ValidationError, match="one vector per owner"):
        agg(vectors[:2])
    with pytest.raises(EncodingError):
        agg([np.array([np.nan, 0, 0])] * 3)
    with pytest.raises(EncodingError, match="range"):
        agg([np.array([1e20, 0, 0])] * 3)
    with pytest.raises(ParameterError, match="parties"):
        ThresholdSecureSum(7)
    with pytest.raises(ParameterError):
        ThresholdSecureSum(1)


@needs_data
def test_fedavg_secure_equals_plain_and_approaches_central(small):
    train, test = small
    owners = partition_owners(train, 3, seed=0)
    assert sum(o.n_customers for o in owners) == train.n_customers
    config = FedAvgConfig(rounds=20)
    plain, report = fedavg_logistic(owners, config)
    secure, _ = fedavg_logistic(owners, config, aggregate=ThresholdSecureSum(3))
    s_plain = plain.decision_function(test.features)
    assert np.max(np.abs(secure.decision_function(test.features) - s_plain)) < 1e-6
    assert report["owners"] == [o.n_customers for o in owners]
    central = make_logistic_pipeline(train).fit(train.features, train.target)
    auc_central = roc_auc_score(test.target, central.decision_function(test.features))
    assert roc_auc_score(test.target, s_plain) > auc_central - 0.02
    with pytest.raises(ParameterError):
        fedavg_logistic(owners[:1])
    with pytest.raises(ParameterError):
        partition_owners(train, 1)


@needs_data
def test_dp_pipeline_spends_its_budget(small):
    from diffprivlib.accountant import BudgetAccountant

    train, test = small
    model = make_dp_pipeline(train, 0.5, seed=0)
    accountant = model[-1].accountant
    assert isinstance(accountant, BudgetAccountant)
    model.fit(train.features, train.target)
    assert accountant.total() == (0.5, 0)
    other = make_dp_pipeline(train, 0.5, seed=1).fit(train.features, train.target)
    assert not np.allclose(model[-1].coef_, other[-1].coef_)  # noise differs by seed
    assert model.decision_function(test.features).shape == (test.n_customers,)
    with pytest.raises(ParameterError):
        make_dp_pipeline(train, 0.0)


@needs_data
@pytest.mark.slow
def test_evaluate_variant_and_outputs(small, tmp_path):
    train, test = small
    config = EvalConfig(data_dir=DATA, epsilons=(1.0,), dp_seeds=1, n_owners=3,
                        fedavg=FedAvgConfig(rounds=3), segment_sample=300,
                        segment_max_iter=3, n_segments=4)
    res = evaluate_variant(train, test, config)
    methods = res["methods"]
    assert set(methods) >= {"plaintext", "encrypted", "encrypted_sigmoid", "segments",
                            "federated", "dp", "gradient_boosting"}
    enc = methods["encrypted"]
    assert enc["max_abs_score_error"] < 1e-4 and enc["max_metric_difference"] <= 1e-3
    assert methods["federated"]["aggregation"].startswith("threshold secure aggregation")
    assert len(methods["segments"]["segment_response_rate"]) == 4
    results = {"variants": {"bank-additional-full/without-duration": res}}
    results["comparison"] = compare_with_published(results)
    paths = write_outputs(results, tmp_path / "out" / "bank.json")
    loaded = json.loads(paths["json"].read_text())
    assert loaded["variants"]["bank-additional-full/without-duration"]["n_test"] == \
        test.n_customers
    assert "| encrypted scoring (CKKS) |" in paths["markdown"].read_text()
    for key in ("roc", "dp_epsilon"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gaps = [row["max_abs_gap"] for row in results["comparison"]]
    assert gaps == sorted(gaps)


def test_eval_config_is_frozen():
    config = EvalConfig(data_dir=Path("."))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3  # type: ignore[misc]


# --- CLI -------------------------------------------------------------------------------------

@needs_data
def test_cli_score_train_run_and_bench(tmp_path):
    from cipherseg.cli import app

    with gzip.open(DATA / "bank-additional-full.csv.gz", "rt") as fh:
        lines = fh.readlines()
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(np.arange(1, len(lines)), 3000, replace=False))
    with gzip.open(tmp_path / "bank-additional-full.csv.gz", "wt") as fh:
        fh.write(lines[0])
        fh.writelines(lines[i] for i in keep)
    runner = CliRunner()
    model = tmp_path / "model.joblib"
    r = runner.invoke(app, ["score", "train", "--data-dir", str(tmp_path), "--model", str(model)])
    assert r.exit_code == 0, r.output
    seg, report = tmp_path / "seg.csv", tmp_path / "run.json"
    r = runner.invoke(app, ["score", "run", str(tmp_path / "bank-additional-full.csv.gz"),
                            "--model", str(model), "--top", "120", "--out", str(seg),
                            "--json", str(report)])
    assert r.exit_code == 0, r.output
    rows = seg.read_text().splitlines()
    assert rows[0] == "rank,customer_id" and len(rows) == 121
    assert json.loads(report.read_text())["merchant_view"]["size"] == 120
    r = runner.invoke(app, ["score", "run", str(tmp_path / "bank-additional-full.csv.gz"),
                            "--model", str(model), "--threshold", "100", "--out", str(seg)])
    assert r.exit_code == 2 and "minimum segment size" in r.output
    r = runner.invoke(app, ["score", "run", str(tmp_path / "bank-additional-full.csv.gz"),
                            "--model", str(model), "--out", str(seg)])
    assert r.exit_code == 2 and "exactly one" in r.output
    not_model = tmp_path / "x.joblib"
    not_model.write_bytes(b"junk")
    r = runner.invoke(app, ["score", "run", str(tmp_path / "bank-additional-full.csv.gz"),
                            "--model", str(not_model), "--top", "5", "--out", str(seg)])
    assert r.exit_code == 2 and "cannot load model" in r.output
    bench = tmp_path / "bench" / "scoring.json"
    r = runner.invoke(app, ["bench", "score", "--data-dir", str(tmp_path), "--customers", "300",
                            "--json", str(bench)])
    assert r.exit_code == 0, r.output
    res = json.loads(bench.read_text())["results"][0]
    assert res["customers"] == 300 and res["encrypted"]["max_abs_score_error"] < 1e-4
    assert bench.with_suffix(".png").exists()
