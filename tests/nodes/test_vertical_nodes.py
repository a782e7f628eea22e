"""Issue 20 on nodes: a mall node and a merchant node (``cipherseg vertical join``, separate
processes, each in its own data directory) and the centre and manager services (separate
processes, protocol 4.5 beside 4.2) run a vertical session on loopback.

(a) ARI >= 0.999 against scikit-learn on the joined plaintext of the shared customers from
the same initial centres; (b) neither node's directory (data, output, log) nor the services'
holds the other node's planted column values, while each node's holds its own; (c) a holder
killed mid-run ends the session on the other with a clear reason and no release."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from cipherseg.analytics.synthetic_vertical import make_vertical_demo
from cipherseg.errors import TransportError
from cipherseg.nodes.client import ServiceClient
from cipherseg.testing.joint_services import JointServices, joint_services

pytestmark = pytest.mark.slow

NODES = ("mall", "cafe")
COLUMNS = {"mall": ("recency", "frequency", "monetary"), "cafe": ("visits", "spend")}
#: Values planted in each node's shared rows (inside the data's range, so the run is normal).
MARKERS = {"mall": (0.7316519384, -0.4417263958), "cafe": (0.6182736451, -0.5529174463)}


def write_data(path: Path, ids: list[str], X: np.ndarray, node: str) -> None:
    lines = ["phone," + ",".join(COLUMNS[node])]
    lines += [f"{i}," + ",".join(f"{v:.10f}" for v in row) for i, row in zip(ids, X,
                                                                             strict=True)]
    path.write_text("\n".join(lines) + "\n")


def start_node(services: JointServices, node: str, home: Path, terms: dict,  # type: ignore[type-arg]
               contact: float = 60.0) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "terms.json").write_text(json.dumps(terms))
    for service, tokens in (("manager", services.manager_tokens),
                            ("centre", services.centre_tokens)):
        (home / f"{service}.token").write_text(tokens[node] + "\n")
        (home / f"{service}.token").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSEG_")}
    cmd = [sys.executable, "-m", "cipherseg", "vertical", "join", "--terms", "terms.json",
           "--node", node, "--data", "data.csv", "--manager", services.manager_url,
           "--manager-token-file", "manager.token", "--centre", services.centre_url,
           "--centre-token-file", "centre.token", "--out", "segments.csv",
           "--contact-seconds", str(contact)]
    log = (home / "node.log").open("wb")
    return subprocess.Popen(cmd, cwd=home, stdout=log, stderr=subprocess.STDOUT, env=env)


def terms_for(session: str, k: int, init: np.ndarray | None = None) -> dict:  # type: ignore[type-arg]
    doc = {"protocol": "kmeans-vertical", "session": session, "nodes": list(NODES),
           "n_clusters": k, "features": [list(COLUMNS[n]) for n in NODES], "max_iter": 50}
    if init is not None:
        doc.update(init="given", init_centres=[float(v) for v in init.ravel()])
    return doc


def read_segments(path: Path) -> dict[str, int]:
    rows = path.read_text().splitlines()[1:]
    return {r.split(",")[0]: int(r.split(",")[1]) for r in rows}


def test_vertical_session_between_two_nodes(tmp_path: Path) -> None:
    demo = make_vertical_demo(240, k=3, extra_fraction=0.2, seed=5)
    X = {"mall": demo.X_a.copy(), "cafe": demo.X_b.copy()}
    ids = {"mall": list(demo.ids_a), "cafe": list(demo.ids_b)}
    shared = sorted(set(ids["mall"]) & set(ids["cafe"]))
    for n in NODES:  # plant the markers in a shared customer's row
        row = ids[n].index(shared[7])
        X[n][row, 0], X[n][row, 1] = MARKERS[n]
    index = {n: {c: i for i, c in enumerate(ids[n])} for n in NODES}
    joined = np.hstack([X[n][[index[n][c] for c in shared]] for n in NODES])
    init = joined[[3, 50, 120]]
    with ExitStack() as stack:
        services = stack.enter_context(joint_services(tmp_path / "services", NODES,
                                                      contact_seconds=5.0))
        homes = {n: tmp_path / n for n in NODES}
        for n in NODES:
            homes[n].mkdir()
            write_data(homes[n] / "data.csv", ids[n], X[n], n)
        terms = terms_for("v" * 24 + "session1", 3, init)
        procs = {n: start_node(services, n, homes[n], terms) for n in NODES}
        for n, p in procs.items():
            assert p.wait(timeout=600) == 0, (homes[n] / "node.log").read_text()

        # (a) the segments against scikit-learn on the joined plaintext
        ref = KMeans(3, init=init, n_init=1, max_iter=50, tol=0).fit(joined)
        for n in NODES:
            segments = read_segments(homes[n] / "segments.csv")
            assert sorted(segments) == shared  # exactly the intersection, own ids
            got = np.array([segments[c] for c in shared])
            assert adjusted_rand_score(ref.labels_, got) >= 0.999
        log = (homes["cafe"] / "node.log").read_text()
        assert "shared customers in 3 segments" in log

        # (b) no node (and no service) holds the other's planted values
        def needles(node: str) -> list[bytes]:
            out = []
            for v in MARKERS[node]:
                out += [f"{v:.10f}".encode(), f"{v:.6f}".encode(), struct.pack("<d", v),
                        struct.pack(">d", v)]
            return out

        def blobs(home: Path) -> list[bytes]:
            return [p.read_bytes() for p in home.rglob("*") if p.is_file()]

        for n in NODES:
            own = blobs(homes[n])
            assert any(x in b for b in own for x in needles(n)), f"{n}: scan finds nothing"
            other = next(o for o in NODES if o != n)
            hits = [x for x in needles(other) if any(x in b for b in own)]
            assert not hits, f"{n} holds {other}'s values: {hits}"
        service_files = blobs(tmp_path / "services")
        for n in NODES:
            assert not [x for x in needles(n) if any(x in b for b in service_files)]

        # (c) a holder dying mid-run: the other ends with the reason, nothing released
        session = "v" * 24 + "session2"
        terms = terms_for(session, 3)
        for n in NODES:
            (homes[n] / "segments.csv").unlink()
        watcher = ServiceClient(services.manager_url, token=services.manager_tokens["cafe"],
                                what="manager")
        cafe = start_node(services, "cafe", homes["cafe"], terms, contact=5.0)
        deadline = time.monotonic() + 120
        while _state(watcher, session) != "waiting":  # the cafe joined, the mall not yet
            assert time.monotonic() < deadline, "the cafe never joined"
            time.sleep(0.05)
        cafe.send_signal(signal.SIGSTOP)  # the cafe's machine freezes: it will never answer
        procs = {"mall": start_node(services, "mall", homes["mall"], terms, contact=5.0)}
        while _state(watcher, session) == "waiting":
            assert time.monotonic() < deadline, "the session never started"
            time.sleep(0.05)
        assert procs["mall"].wait(timeout=120) == 1
        log = (homes["mall"] / "node.log").read_text()
        assert "node cafe stopped responding" in log and "nothing was released" in log, log
        assert not (homes["mall"] / "segments.csv").exists()
        assert not (homes["cafe"] / "segments.csv").exists()
        assert _state(watcher, session) == "aborted"
        cafe.kill()
        cafe.wait()


def _state(watcher: ServiceClient, session: str) -> str:
    try:
        return str(watcher.session_status(session)["state"])
    except TransportError:  # 404 until the mall has joined
        return "unknown"
