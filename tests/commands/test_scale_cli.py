"""`bench scale` and the --engine/--workers/--scheduler options of the protocol commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cipherseg.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_bench_scale_writes_speedups_growth_memory_and_a_plot(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    result = runner.invoke(app, [
        "bench", "scale", "--customers", "2000,5000", "--workers", "1,2", "--engine", "local",
        "--k", "2", "--iterations", "1", "--cache-dir", str(tmp_path / "cache"),
        "--json", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    runs = payload["runs"]
    assert {(r["customers_requested"], r["workers"]) for r in runs} == {
        (2000, 1), (2000, 2), (5000, 1), (5000, 2)}
    for r in runs:
        assert r["ari_vs_sklearn"] == 1.0
        assert r["seconds_centre"] > 0 and r["seconds_owner"] > 0
        assert all(mb > 0 for mb in r["peak_rss_mb"].values())
        if r["workers"] == 2 and r["n_blocks"] >= 2:  # one block runs in the front process
            assert "centre pool process 1" in r["peak_rss_mb"]
    summary = payload["summary"]
    assert [s["customers"] for s in summary["speedup"]] == [2000, 5000]
    assert [g["workers"] for g in summary["growth"]] == [1, 2]
    prep = {p["customers"]: p for p in payload["data_preparation"]}
    assert prep[5000]["rfm_dask_max_relative_difference"] < 1e-12
    assert prep[5000]["transaction_lines"] > 5000


@pytest.mark.slow
def test_demo_with_the_centre_on_a_local_dask_cluster(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    result = runner.invoke(app, ["demo", "--customers", "3000", "--k", "3", "--workers", "2",
                                 "--engine", "dask", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "centre: encrypted score blocks" in result.output
    assert json.loads(out.read_text())["ari_vs_sklearn"] >= 0.999


@pytest.mark.parametrize(("args", "message"), [
    (["--engine", "spark"], "--engine must be one of local, dask"),
    (["--engine", "local", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --engine dask"),
])
def test_bad_engine_options_are_refused(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["demo", "--customers", "100", *args])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
