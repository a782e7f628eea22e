"""Protocol 4.2 with one node per organisation over loopback HTTP against the same session
with every party in one process, measured in the same run (``cipherseg bench joint
--network``).

Both runs use the same owners' data (synthetic malls, built once per owner before any clock
starts), the same public initial centres and the same iterations, so they compute the same
model. The network run starts ``cipherseg centre serve --protocol joint`` and ``cipherseg
manager serve`` as processes and one process per node running
:func:`cipherseg.nodes.owner.run_owner`; its clock runs from the nodes' joining to the last
node holding its labels. The in-process run is
:func:`cipherseg.protocols.joint.runner.run_joint_kmeans`. Runs alternate (in-process, network,
in-process, …) so load on the machine hits both alike; the ratio is of medians, and each
pair's ratio and the load average are recorded (on a loaded machine single runs vary
several-fold). The network run's parties are processes and may use several cores at once;
the in-process run uses one.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.bench.joint import _data


def _initial_centres(parts: list[npt.NDArray[np.float64]], k: int, seed: int
                     ) -> npt.NDArray[np.float64]:
    """Public initial centres: k pooled records picked by the benchmark (an evaluator)."""
    pooled = np.vstack(parts)
    rng = np.random.default_rng(seed)
    return np.round(pooled[rng.choice(len(pooled), size=k, replace=False)], 2)


def _node_process(node: str, terms_doc: dict[str, Any], part: npt.NDArray[np.float64],
                  urls: tuple[str, str], tokens: tuple[str, str], go: Any, out: Any) -> None:
    from cipherseg.nodes.client import ServiceClient
    from cipherseg.nodes.owner import run_owner
    from cipherseg.nodes.terms import JointTerms
    from cipherseg.protocols.joint.runner import one_blas_thread

    one_blas_thread()
    try:
        terms = JointTerms.from_json(terms_doc)
        manager = ServiceClient(urls[0], token=tokens[0], what="manager")
        centre = ServiceClient(urls[1], token=tokens[1], what="centre")
        out.put((node, "ready", None))
        go.wait()
        start = time.perf_counter()
        outcome = run_owner(terms, node, part, manager=manager, centre=centre,
                            poll_wait=5.0)
        out.put((node, "ok", {"seconds": time.perf_counter() - start, "end": time.time(),
                              "n_iter": outcome.n_iter,
                              "bytes_sent": outcome.bytes_sent,
                              "bytes_received": outcome.bytes_received,
                              "centroids": outcome.centroids.tolist(),
                              "labels_head": outcome.labels[:1000].tolist()}))
    except BaseException as exc:  # reported to the parent
        out.put((node, "error", f"{type(exc).__name__}: {exc}"))


def _network_run(services: Any, nodes: list[str], parts: list[npt.NDArray[np.float64]],
                 k: int, init: npt.NDArray[np.float64], max_iter: int) -> dict[str, Any]:
    from cipherseg.nodes.terms import JointTerms

    terms = JointTerms(session=uuid.uuid4().hex, nodes=tuple(nodes), n_clusters=k,
                       features=tuple(f"f{i}" for i in range(init.shape[1])), decimals=2,
                       max_iter=max_iter, init="given",
                       init_centres=tuple(float(v) for v in init.ravel()))
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_node_process, daemon=True, args=(
        n, terms.to_json(), part, (services.manager_url, services.centre_url),
        (services.manager_tokens[n], services.centre_tokens[n]), go, out))
        for n, part in zip(nodes, parts, strict=True)]
    for p in procs:
        p.start()
    reports: dict[str, Any] = {}
    ready: set[str] = set()
    start_wall = time.time()
    try:
        while len(reports) < len(nodes):
            node, status, payload = out.get(timeout=1800)
            if status == "ready":  # imported, holding its data and its clients
                ready.add(node)
                if len(ready) == len(nodes):
                    start_wall = time.time()
                    go.set()
                continue
            if status != "ok":
                raise RuntimeError(f"node {node}: {payload}")
            reports[node] = payload
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    wall = max(r["end"] for r in reports.values()) - start_wall
    n_iter = reports[nodes[0]]["n_iter"]
    return {"seconds": wall, "n_iter": n_iter,
            "bytes_per_node_per_iteration": {
                n: round((r["bytes_sent"] + r["bytes_received"]) / max(n_iter, 1), 1)
                for n, r in reports.items()},
            "centroids": reports[nodes[0]]["centroids"]}


def _in_process_run(parts: list[npt.NDArray[np.float64]], k: int,
                    init: npt.NDArray[np.float64], max_iter: int) -> dict[str, Any]:
    from cipherseg.protocols.joint.runner import one_blas_thread, run_joint_kmeans

    with one_blas_thread():
        start = time.perf_counter()
        result = run_joint_kmeans(parts, k, init=init, max_iter=max_iter, tol=0.0,
                                  decimals=2)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "n_iter": int(result.n_iter),
            "bytes_per_party_per_iteration": {
                p: round(v, 1) for p, v in result.bytes_per_party_per_iteration().items()},
            "centroids": result.centroids.tolist()}


def run_network_bench(*, nodes: int = 3, customers: int = 200_000, k: int = 4,
                      max_iter: int = 10, repeats: int = 3, seed: int = 0, data: str = "rfm",
                      on_run: Any = None) -> dict[str, Any]:
    """``repeats`` alternating pairs of runs; see the module docstring."""
    from cipherseg.testing.joint_services import joint_services

    factory = _data(data, customers, seed)
    parts = [factory(i) for i in range(1, nodes + 1)]
    init = _initial_centres(parts, k, seed)
    names = [f"node{i}" for i in range(1, nodes + 1)]
    runs: dict[str, list[dict[str, Any]]] = {"in_process": [], "network": []}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cipherseg-bench-nodes-") as tmp, \
            joint_services(Path(tmp), names, contact_seconds=120.0) as services:
        for _ in range(repeats):
            runs["in_process"].append(_in_process_run(parts, k, init, max_iter))
            if on_run:
                on_run()
            runs["network"].append(_network_run(services, names, parts, k, init, max_iter))
            if on_run:
                on_run()
    load_after = os.getloadavg()
    med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
    pairs = [n["seconds"] / i["seconds"]
             for i, n in zip(runs["in_process"], runs["network"], strict=True)]
    same = all(np.allclose(r["centroids"], runs["in_process"][0]["centroids"], atol=1e-9)
               for rs in runs.values() for r in rs)
    return {
        "nodes": nodes, "customers_per_node": customers, "k": k, "max_iter": max_iter,
        "data": data, "seed": seed, "repeats": repeats,
        "n_iter": runs["in_process"][0]["n_iter"],
        "median_seconds": med, "ratio_network_vs_in_process": med["network"] / med["in_process"],
        "pair_ratios": [round(r, 3) for r in pairs],
        "median_pair_ratio": statistics.median(pairs),
        "loadavg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "cpus": os.cpu_count(),
        "target_ratio": 1.3, "identical_models": bool(same),
        "bytes_per_party_per_iteration_in_process":
            runs["in_process"][0]["bytes_per_party_per_iteration"],
        "http_body_bytes_per_node_per_iteration":
            runs["network"][0]["bytes_per_node_per_iteration"],
        "runs": {m: [{k_: v for k_, v in r.items() if k_ != "centroids"} for r in rs]
                 for m, rs in runs.items()},
        "note": "wall seconds from the nodes' joining (network) or the manager's start "
                "(in process) to the last node's labels; services started once, before; "
                "each node's data built before its clock starts",
    }
