"""The Bank Marketing evaluation: one variant end to end, its outputs, its progress, the CLI."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bank_data import DATA, needs_data, small_split
from cipherseg.analytics.federated import FedAvgConfig
from cipherseg.bench.evaluation import (
    EvalConfig,
    compare_with_published,
    evaluate_variant,
    planned_steps,
)
from cipherseg.bench.evaluation_report import write_outputs


@needs_data
@pytest.mark.slow
def test_evaluate_variant_and_outputs(tmp_path):
    train, test = small_split()
    config = EvalConfig(data_dir=DATA, epsilons=(1.0,), dp_seeds=1, n_owners=3,
                        fedavg=FedAvgConfig(rounds=3), segment_sample=300,
                        segment_max_iter=3, n_segments=4)
    calls: list[tuple[str, int, int]] = []
    res = evaluate_variant(train, test, config, lambda *call: calls.append(call))
    # One call as each method starts: 0..n-1 of n, n the steps of a variant in the plan.
    assert [done for _, done, _ in calls] == list(range(len(calls)))
    assert {total for _, _, total in calls} == {len(calls)}
    assert len(calls) == planned_steps(dataclasses.replace(
        config, variants=("bank-additional-full",), durations=(False,)))
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
