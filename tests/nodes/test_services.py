"""Protocol 4.2 across processes over HTTP: the centre and manager services, owners driven
by :func:`cipherseg.nodes.owner.run_owner` (one thread per node here; separate platforms in
tests/nodes/test_three_nodes.py)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from cipherseg.errors import TransportError
from cipherseg.nodes.client import ServiceClient
from cipherseg.nodes.owner import OwnerOutcome, run_owner
from cipherseg.nodes.terms import JointTerms
from cipherseg.nodes.wire import JointAborted
from cipherseg.protocols.joint import messages as jm
from cipherseg.testing.joint_services import JointServices, joint_services

NODES = ("north", "south", "east")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> JointServices:
    with joint_services(tmp_path_factory.mktemp("joint"), NODES, contact_seconds=4.0,
                        join_minutes=0.1) as s:
        yield s


def clients(s: JointServices, node: str) -> tuple[ServiceClient, ServiceClient]:
    return (ServiceClient(s.manager_url, token=s.manager_tokens[node], what="manager"),
            ServiceClient(s.centre_url, token=s.centre_tokens[node], what="centre"))


def data(seed: int, n: int = 150) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 4.0, 4.0]])
    return np.round(centres[rng.integers(0, 3, n)] + rng.normal(0, 0.6, (n, 3)), 2)


def terms(nodes: tuple[str, ...] = NODES, **kw: object) -> JointTerms:
    base: dict[str, object] = dict(session=uuid.uuid4().hex, nodes=nodes, n_clusters=3,
                                   features=("a", "b", "c"), max_iter=30)
    base.update(kw)
    return JointTerms(**base)  # type: ignore[arg-type]


def run_nodes(s: JointServices, t: JointTerms, parts: dict[str, np.ndarray],
              **kw: object) -> dict[str, OwnerOutcome | BaseException]:
    results: dict[str, OwnerOutcome | BaseException] = {}

    def one(node: str) -> None:
        manager, centre = clients(s, node)
        try:
            results[node] = run_owner(t, node, parts[node], manager=manager, centre=centre,
                                      contact_timeout=4.0, poll_wait=1.0, random_state=7,
                                      **kw)  # type: ignore[arg-type]
        except BaseException as exc:
            results[node] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in parts]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    return results


def test_joint_kmeans_over_http_matches_scikit_learn(services: JointServices) -> None:
    parts = {n: data(i) for i, n in enumerate(NODES)}
    t = terms()
    results = run_nodes(services, t, parts)
    outcomes = [results[n] for n in NODES]
    assert all(isinstance(o, OwnerOutcome) for o in outcomes), results
    ok = [o for o in outcomes if isinstance(o, OwnerOutcome)]
    assert [o.party_id for o in ok] == [1, 2, 3]
    for o in ok[1:]:  # every node got the same model
        np.testing.assert_array_equal(o.centroids, ok[0].centroids)
        np.testing.assert_array_equal(o.init_centres, ok[0].init_centres)
    pooled = np.vstack([parts[n] for n in NODES])
    ref = KMeans(3, init=ok[0].init_centres, n_init=1, max_iter=30, tol=0).fit(pooled)
    labels = np.concatenate([o.labels for o in ok])
    assert adjusted_rand_score(ref.labels_, labels) >= 0.999
    np.testing.assert_allclose(ok[0].centroids, ref.cluster_centers_, atol=1e-2)
    assert all(o.bytes_sent > 0 and o.bytes_received > 0 for o in ok)
    centre_status = clients(services, "north")[1].status()
    assert centre_status["service"] == "centre" and centre_status["key_code_loaded"] == []


def test_a_node_that_goes_silent_ends_the_session_for_everyone(
        services: JointServices) -> None:
    t = terms()
    manager, _ = clients(services, "east")
    manager.open({"terms": t.to_json()})  # east joins, then never polls again: it "died"
    results = run_nodes(services, t, {n: data(i) for i, n in enumerate(NODES[:2])})
    for node in NODES[:2]:
        exc = results[node]
        assert isinstance(exc, JointAborted), exc
        assert "node east stopped responding" in str(exc)
        assert "nothing is released" in str(exc)
    manager, _ = clients(services, "north")
    assert manager.session_status(t.session)["state"] == "aborted"


def test_a_node_that_never_joins_ends_the_session(services: JointServices) -> None:
    t = terms()
    results = run_nodes(services, t, {"north": data(0)})
    assert isinstance(results["north"], JointAborted)
    assert "east, south did not join" in str(results["north"])


def test_terms_must_agree_and_name_the_caller(services: JointServices) -> None:
    t = terms()
    north, _ = clients(services, "north")
    south, _ = clients(services, "south")
    north.open({"terms": t.to_json()})
    with pytest.raises(TransportError, match="differ from those the other nodes joined"):
        south.open({"terms": {**t.to_json(), "n_clusters": 4}})
    other = terms(nodes=("north", "south"))
    east, _ = clients(services, "east")
    with pytest.raises(TransportError, match="not named in the terms"):
        east.open({"terms": other.to_json()})
    north.abort(t.session, "test over")


def test_sessions_answer_only_their_nodes_and_services_bound_input(
        services: JointServices) -> None:
    t = terms(nodes=("north", "south"))
    north, north_centre = clients(services, "north")
    north.open({"terms": t.to_json()})
    east, _ = clients(services, "east")
    # a node not in the session cannot read its mailbox, post to it or abort it
    with pytest.raises(TransportError, match="UnknownSession"):
        east.poll(t.session, after=0, wait=0)
    with pytest.raises(TransportError, match="UnknownSession"):
        east.session_status(t.session)
    east.abort(t.session, "not mine")  # refused (404): the session goes on
    assert north.session_status(t.session)["state"] == "waiting"
    # only the manager opens sessions on the centre
    with pytest.raises(TransportError, match="only the manager service"):
        north_centre.open({"session": t.session, "nodes": ["north"]})
    url = services.manager_url + f"/v1/joint/sessions/{t.session}/messages"
    auth = {"Authorization": f"Bearer {services.manager_tokens['north']}"}
    assert httpx.post(url, content=b"x").status_code == 401
    assert httpx.post(url, content=b"x", headers={"Authorization": "Bearer nope"}
                      ).status_code == 401
    host, port = services.manager_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as raw:  # declares 65 MB, sends none
        raw.sendall(f"POST /v1/joint/sessions/{t.session}/messages HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: {auth['Authorization']}\r\n"
                    f"Content-Length: {65 * 1024**2}\r\n\r\n".encode())
        assert raw.recv(100).startswith(b"HTTP/1.1 413")
    assert httpx.post(url, content=b"not a message", headers=auth).status_code == 400
    foreign = jm.Close(protocol_version=1, session_id="f" * 32, round=0).to_bytes()
    r = httpx.post(url, content=foreign, headers=auth)
    assert r.status_code == 400 and "posted to session" in r.json()["detail"]
    r = httpx.post(services.manager_url + "/v1/joint/sessions", headers=auth,
                   content=b"{" * 70_000)
    assert r.status_code == 413
    r = httpx.get(services.manager_url + f"/v1/joint/sessions/{t.session}/mailbox",
                  params={"wait": 999}, headers=auth)
    assert r.status_code == 400
    north.abort(t.session, "test over")
    with pytest.raises(JointAborted, match="north ended the session: test over"):
        north.poll(t.session, after=0, wait=0)


def test_tokens_stay_out_of_the_logs(services: JointServices) -> None:
    text = "".join(Path(p).read_text() for p in services.logs.values())
    for token in [*services.centre_tokens.values(), *services.manager_tokens.values()]:
        assert token not in text


def test_a_node_takes_part_in_at_most_four_open_sessions(services: JointServices) -> None:
    east, _ = clients(services, "east")
    opened = [terms(nodes=("east", "north")) for _ in range(5)]
    for t in opened[:4]:
        east.open({"terms": t.to_json()})
    with pytest.raises(TransportError, match="already takes part in 4 open sessions"):
        east.open({"terms": opened[4].to_json()})
    for t in opened[:4]:
        east.abort(t.session, "test over")
    east.open({"terms": opened[4].to_json()})  # aborted sessions do not count
    east.abort(opened[4].session, "test over")


def test_a_node_cannot_speak_as_the_manager(services: JointServices) -> None:
    """The sender is the token's node: a Setup a node posts to the centre is the node's, the
    centre refuses it and the session ends for every node with the reason."""
    t = terms(nodes=("north", "south"))
    (north, north_centre), (south, _) = clients(services, "north"), clients(services, "south")
    north.open({"terms": t.to_json()})
    south.open({"terms": t.to_json()})  # the last join starts the session on both services
    item = north.poll(t.session, after=0, wait=10)
    assert item is not None and isinstance(item[2], jm.Setup)
    with pytest.raises(TransportError, match="only the manager may open a session"):
        north_centre.post(t.session, item[2])
    deadline = time.monotonic() + 30  # the manager learns it from the centre
    with pytest.raises(JointAborted, match="refused Setup from node north"):
        while time.monotonic() < deadline:
            south.poll(t.session, after=10**6, wait=1)
