"""`cipherseg joint-demo`, `cipherseg bench joint`, `cipherseg bench joint-dp` (protocol 4.2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

_STAGES = {
    "keygen": "collective key generation",
    "init": "joint k-means++ (initial centres)",
    "iterations": "Lloyd iterations (encrypted aggregates)",
    "data": "synthetic malls → RFM features",
    "main": "threshold vs plaintext aggregation",
    "owners": "cost against the number of owners",
    "dp": "DP runs (ε × seeds)",
}


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


class _Stages:
    """Feeds StageProgress; ``finish`` fills the bars of stages that ended early."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.seen: list[str] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        key = _STAGES.get(stage, stage)
        if key not in self.seen:
            for earlier in self.seen:  # stages run in order: a new one ends the previous
                self.progress.done(earlier)
            self.seen.append(key)
        self.progress.callback(key, done, total)

    def finish(self) -> None:
        for key in self.seen:
            self.progress.done(key)


def joint_demo(
    owners: Annotated[int, typer.Option(min=2, max=6, help="Data owners (the manager is the "
                                                           "7th key party at most).")] = 3,
    customers_per_owner: Annotated[int, typer.Option(min=10)] = 20_000,
    k: Annotated[int, typer.Option(min=1)] = 4,
    dp_epsilon: Annotated[float | None, typer.Option(help="Differential privacy: ε for the "
                                                          "whole run (off by default).")] = None,
    dp_delta: Annotated[float, typer.Option()] = 1e-6,
    max_iter: Annotated[int | None, typer.Option(
        min=1, help="Iteration cap (default 100); with DP the number of iterations the budget "
                    "is split across, all run (default 10).")] = None,
    decimals: Annotated[int, typer.Option(min=0, max=6)] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    data: Annotated[str, typer.Option(help="rfm (synthetic malls) or blobs (quick).")] = "rfm",
    in_process: Annotated[bool, typer.Option(help="All parties in this process instead of "
                                                  "one process each.")] = False,
    json_path: Annotated[Path | None, typer.Option("--json")] = None,
) -> None:
    """Joint segmentation of several malls' customers with threshold encryption (protocol 4.2).

    Each owner, the manager and the compute centre run as separate processes exchanging
    bytes. Reports ARI against scikit-learn on the pooled plaintext from the same initial
    centres, the max centroid error, bytes per party per iteration and seconds per stage.
    """
    from cipherseg.bench.joint import run_demo
    from cipherseg.commands.progress import StageProgress, console

    iterations = max_iter if max_iter is not None else (100 if dp_epsilon is None else 10)
    with StageProgress() as progress:
        report = run_demo(owners=owners, customers=customers_per_owner, k=k,
                          dp_epsilon=dp_epsilon, dp_delta=dp_delta, decimals=decimals,
                          max_iter=iterations, seed=seed, data=data, processes=not in_process,
                          progress=(stages := _Stages(progress)))
        stages.finish()
    stages = report["seconds_per_stage"]
    console.print(
        f"{owners} owners × {customers_per_owner:,} customers, k={k}: {report['n_iter']} "
        f"iterations; ARI vs scikit-learn (pooled, same init) "
        f"{report['ari_vs_sklearn_pooled']:.4f}; max centroid error "
        f"{report['max_centroid_error']:.3g}"
    )
    console.print("seconds per stage: " + ", ".join(f"{s} {v:.2f}" for s, v in stages.items()))
    per = report["bytes_per_party_per_iteration"]
    console.print("kB per party per iteration: "
                  + ", ".join(f"{p} {v / 1e3:.1f}" for p, v in per.items()))
    if report["dp"] is not None:
        console.print(f"DP: ε={report['dp']['epsilon']} δ={report['dp']['delta']} over "
                      f"{report['dp']['releases']} iterations, noise multiplier "
                      f"{report['dp']['noise_multiplier']:.2f} (each owner)")
    if json_path is not None:
        _write_json(json_path, report)
        console.print(f"wrote {json_path}")


def bench_joint(
    owners: Annotated[int, typer.Option(min=2, max=6)] = 5,
    customers_per_owner: Annotated[int, typer.Option(min=10)] = 200_000,
    k: Annotated[int, typer.Option(min=1)] = 4,
    owner_counts: Annotated[str, typer.Option(help="Owner counts for the scaling plot.")]
    = "2,3,4,5,6",
    scaling_customers: Annotated[int | None, typer.Option(help="Customers per owner in the "
                                                               "scaling runs (default: same).")]
    = None,
    repeats: Annotated[int, typer.Option(min=1)] = 3,
    seed: Annotated[int, typer.Option()] = 0,
    data: Annotated[str, typer.Option(help="rfm or blobs.")] = "rfm",
    json_path: Annotated[Path, typer.Option("--json")] = Path("bench/results/joint.json"),
    network: Annotated[bool, typer.Option(
        "--network", help="Instead: one node per organisation over loopback HTTP (the "
        "manager and centre services as processes) vs the same session in one process, same "
        "run (--owners nodes × --customers-per-owner; JSON: joint_network.json).")] = False,
) -> None:
    """Joint k-means with threshold-encrypted vs plaintext aggregation, same run: JSON + PNG."""
    if network:
        from cipherseg.commands.nodes import bench_joint_network

        bench_joint_network(nodes=owners, customers=customers_per_owner, k=k, repeats=repeats,
                            seed=seed, data=data,
                            json_path=json_path.with_name("joint_network.json"))
        return
    from cipherseg.bench.joint import plot_joint_bench, run_joint_bench
    from cipherseg.commands.progress import StageProgress, console

    counts = [int(c) for c in owner_counts.split(",") if c.strip()]
    with StageProgress() as progress:
        payload = run_joint_bench(owners=owners, customers=customers_per_owner, k=k,
                                  owner_counts=counts, scaling_customers=scaling_customers,
                                  repeats=repeats, seed=seed, data=data,
                                  progress=(stages := _Stages(progress)))
        stages.finish()
    _write_json(json_path, payload)
    png = plot_joint_bench(payload, json_path.with_suffix(".png"))
    main = payload["main"]
    console.print(
        f"{main['owners']} owners × {main['customers_per_owner']:,} customers, k={k}, "
        f"{main['threshold']['n_iter']} iterations: threshold "
        f"{main['median_seconds']['threshold']:.2f} s, plaintext aggregation "
        f"{main['median_seconds']['plain']:.2f} s → ratio "
        f"{main['ratio_threshold_vs_plain']:.2f}× (per iteration "
        f"{main['ratio_per_iteration']:.2f}×); identical results: {main['identical_results']}"
    )
    for r in payload["by_owners"]:
        med = r["median_seconds"]
        console.print(f"  {r['owners']} owners: {med['threshold']:.2f} s vs {med['plain']:.2f} s "
                      f"({r['ratio_threshold_vs_plain']:.2f}×)")
    console.print(f"wrote {json_path} and {png}")


def bench_joint_dp(
    epsilons: Annotated[str, typer.Option()] = "0.02,0.05,0.1,0.2,0.5,1,2,5,10",
    owners: Annotated[int, typer.Option(min=2, max=6)] = 3,
    customers_per_owner: Annotated[int, typer.Option(min=10)] = 20_000,
    k: Annotated[int, typer.Option(min=1)] = 4,
    seeds: Annotated[str, typer.Option()] = "0,1,2",
    iterations: Annotated[int, typer.Option(min=1)] = 10,
    delta: Annotated[float, typer.Option()] = 1e-6,
    data: Annotated[str, typer.Option(help="rfm or blobs.")] = "rfm",
    json_path: Annotated[Path, typer.Option("--json")] = Path("bench/results/joint_dp.json"),
) -> None:
    """Privacy/utility trade-off of DP joint k-means: ARI against ε, JSON + PNG."""
    from cipherseg.bench.joint import plot_dp_bench, run_dp_bench
    from cipherseg.commands.progress import StageProgress, console

    eps = [float(e) for e in epsilons.split(",") if e.strip()]
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    with StageProgress() as progress:
        payload = run_dp_bench(epsilons=eps, owners=owners, customers=customers_per_owner,
                               k=k, seeds=seed_list, delta=delta, max_iter=iterations,
                               data=data, progress=(stages := _Stages(progress)))
        stages.finish()
    _write_json(json_path, payload)
    png = plot_dp_bench(payload, json_path.with_suffix(".png"))
    for e in eps:
        rows = [r for r in payload["rows"] if r["epsilon"] == e]
        same = sorted(r["ari_vs_same_init_without_dp"] for r in rows)
        console.print(f"ε={e:g}: ARI vs same run without DP {same[len(same) // 2]:.3f} "
                      f"(range {same[0]:.3f}–{same[-1]:.3f})")
    console.print(f"wrote {json_path} and {png}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach this module's commands."""
    app.command("joint-demo")(joint_demo)
    bench_app.command("joint")(bench_joint)
    bench_app.command("joint-dp")(bench_joint_dp)
