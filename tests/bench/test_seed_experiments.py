"""`cipherseg bench seed-experiments --quick`: JSON and plots for vhe, ckks and scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cipherseg.cli import app


@pytest.mark.slow
def test_quick_seed_experiments(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "seed-experiments", "--quick", "--out",
                                      str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "BROKEN" in result.output  # the vhe warning comes first
    report = json.loads((tmp_path / "seed_experiments.json").read_text())
    exps = report["experiments"]
    assert set(exps) == {"plaintext_bits", "ciphertext_bits", "customers", "clusters"}
    for name in ("plaintext_bits", "customers", "clusters"):
        assert len(exps[name]) == 3
        for row in exps[name]:
            for scheme in ("vhe", "ckks"):
                assert row[scheme]["encrypt_s"] > 0 and row[scheme]["cluster_s"] > 0
                # same quantised data, same init, same iteration cap as scikit-learn
                assert row[scheme]["ari_vs_sklearn"] >= 0.999
                assert row[scheme]["n_iter"] == row["sklearn"]["n_iter"]
    bits = exps["ciphertext_bits"]
    vhe_bits = sorted(r["vhe"]["ciphertext_bits"] for r in bits if "vhe" in r)
    assert vhe_bits[-1] == 128 and vhe_bits[0] < 64
    assert {r["vhe"]["backend"] for r in bits if "vhe" in r} == {"uint64", "object"}
    assert len([r for r in bits if "ckks" in r]) == 2
    # plaintext bits grow with the decimals (1, 3, 6)
    assert [r["plaintext_bits"] for r in exps["plaintext_bits"]] == sorted(
        r["plaintext_bits"] for r in exps["plaintext_bits"])
    for name in exps:
        png = tmp_path / f"seed_{name}.png"
        assert png.stat().st_size > 10_000
