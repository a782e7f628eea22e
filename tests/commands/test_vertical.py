"""`cipherseg vertical-demo` and `cipherseg bench vertical` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cipherseg.cli import app


def test_vertical_demo_shows_each_holder_alone_and_the_joint_run(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    result = CliRunner().invoke(app, ["vertical-demo", "--customers", "400", "--jobs", "1",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "400 shared customers found by PSI" in result.output
    assert "mall alone" in result.output and "joint encrypted" in result.output
    report = json.loads(out.read_text())
    assert report["ari_joint_vs_sklearn_same_init"] >= 0.999
    assert report["ari_joint_encrypted"] > 0.9
    assert max(report["ari_holder_a_alone"], report["ari_holder_b_alone"]) < 0.6


def test_bench_vertical_writes_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "vertical.json"
    result = CliRunner().invoke(app, ["bench", "vertical", "--customers", "1000",
                                      "--iterations", "2", "--jobs", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    target = payload["target"]
    assert target["n_shared"] == 1000 and target["rows_per_holder"] == [1200, 1200]
    assert target["features"] == [3, 2] and target["n_iter"] <= 2
    assert target["seconds_at_100mbps"] > target["wall_seconds"]
    assert payload["psi"]["shared"] == 800  # 1000 rows each, 20 % not shared
    assert set(target["traffic"]["bytes_sent"]) == {"centre", "holder-1", "holder-2", "manager"}
    assert (tmp_path / "vertical.png").stat().st_size > 10_000
