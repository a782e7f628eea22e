"""One access token per data owner: the owners file, its commands, and sessions that belong
to the owner whose token opened them (the front refuses another owner's messages)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from cipherseg import EncryptedKMeans
from cipherseg.cli import app as cli_app
from cipherseg.errors import ParameterError, ProtocolError, TransportError
from cipherseg.hosting.centre_http import create_centre_app
from cipherseg.hosting.centre_process import CentreProcess
from cipherseg.protocols.messages import peek_envelope
from cipherseg.protocols.outsourced import messages as p
from cipherseg.schemes.ckks import CkksParams
from cipherseg.schemes.ckks_keys import CkksSecretContext
from cipherseg.testing.centre_service import CentreService
from cipherseg.transport.http import CONTENT_TYPE, MESSAGES_PATH, HttpTransport
from cipherseg.transport.tokens import (
    OwnersFile,
    add_owner,
    read_owners_file,
    remove_owner,
    token_digest,
)


def _plain(output: str) -> str:
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


# --- the owners file ----------------------------------------------------------------------
def test_the_owners_file_keeps_digests_only_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "owners"
    north, south = add_owner(path, "north-mall"), add_owner(path, "south_mall.2")
    text = path.read_text()
    assert north not in text and south not in text
    assert read_owners_file(path) == {"north-mall": token_digest(north),
                                      "south_mall.2": token_digest(south)}
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ParameterError, match="already in"):
        add_owner(path, "north-mall")
    with pytest.raises(ParameterError, match="owner name"):
        add_owner(path, "../etc")
    with pytest.raises(ParameterError, match=r"no owner 'east' in .* \(owners: north-mall, "
                                             r"south_mall\.2\)"):
        remove_owner(path, "east")


def test_concurrent_changes_lose_no_owner_and_leave_no_stray_file(tmp_path: Path) -> None:
    path = tmp_path / "owners"
    names = [f"mall-{i}" for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        tokens = dict(zip(names, pool.map(lambda n: add_owner(path, n), names), strict=True))
    registry = OwnersFile(path)
    assert {name: registry.owner_of(t) for name, t in tokens.items()} == {n: n for n in names}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owners", "owners.lock"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_token_file_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "north.token").symlink_to(target)
    result = CliRunner().invoke(cli_app, ["centre", "add-owner", "north", "--owners-file",
                                          str(tmp_path / "owners"), "--token-out",
                                          str(tmp_path / "north.token")])
    assert result.exit_code == 2 and "was not added" in _plain(result.output)
    assert not target.exists() and read_owners_file(tmp_path / "owners") == {}


def test_a_running_registry_sees_additions_and_revocations(tmp_path: Path) -> None:
    path = tmp_path / "owners"
    north = add_owner(path, "north")
    registry = OwnersFile(path)
    south = add_owner(path, "south")
    assert registry.owner_of(south) == "south" and registry.owner_of(north) == "north"
    remove_owner(path, "north")
    assert registry.owner_of(north) is None and registry.names() == ["south"]


def test_a_hand_edited_owners_file_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "owners"
    path.write_text("# comment\nnorth " + "ab" * 32 + "\nsouth not-a-digest\n")
    with pytest.raises(ParameterError, match=r"owners, line 3: expected '<owner name> "
                                             r"<sha256 hex>'"):
        OwnersFile(path)
    path.write_text(f"north {'ab' * 32}\nnorth {'cd' * 32}\n")
    with pytest.raises(ParameterError, match="line 2: owner 'north' appears twice"):
        read_owners_file(path)


@given(st.sampled_from(["Upload", "Close", "Centroids"]), st.text(max_size=40))
def test_the_envelope_is_read_without_the_ciphertexts(kind: str, sid: str) -> None:
    cls = getattr(p, kind)
    msg = cls(protocol_version=p.VERSION, session_id=sid, round=1)
    assert peek_envelope(msg.to_bytes()) == (kind, sid)
    with pytest.raises(ProtocolError):
        peek_envelope(msg.to_bytes()[:12])


# --- sessions belong to their owner ------------------------------------------------------
@pytest.fixture(scope="module")
def centre() -> Iterator[CentreProcess]:
    with CentreProcess(n_jobs=1) as process:
        yield process


def _upload(sid: str) -> bytes:
    owner = CkksSecretContext.generate(CkksParams.for_depth(1))
    return p.Upload(protocol_version=p.VERSION, session_id=sid, round=1,
                    public_context=owner.public_bytes(), n_samples=1, n_features=1,
                    n_clusters=1, block_sizes=(1,),
                    features=(owner.encrypt_to_bytes(np.zeros(1)),)).to_bytes()


def _close(sid: str) -> bytes:
    return p.Close(protocol_version=p.VERSION, session_id=sid, round=2).to_bytes()


def test_an_owner_cannot_act_in_another_owners_session(centre: CentreProcess,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "owners"
    north, south = add_owner(path, "north"), add_owner(path, "south")
    app = create_centre_app(centre, owners=OwnersFile(path))
    as_north = {"Authorization": f"Bearer {north}", "Content-Type": CONTENT_TYPE}
    as_south = {"Authorization": f"Bearer {south}", "Content-Type": CONTENT_TYPE}
    with TestClient(app) as client:
        assert client.post(MESSAGES_PATH, content=_upload("n1"), headers=as_north).status_code \
            == 200
        refused = client.post(MESSAGES_PATH, content=_close("n1"), headers=as_south)
        assert refused.status_code == 400
        assert refused.json() == {"error": "ProtocolError", "detail": str(p.unknown_session("n1"))}
        status = client.get("/v1/status", headers=as_north).json()
        assert status["sessions"] == 1 and status["owner"] == "north"  # still open
        # The status is the owner's own: no other owner's sessions, no pid, no workers.
        assert set(status) == {"owner", "sessions", "holds_secret_key", "modules"}
        assert client.get("/v1/status", headers=as_south).json()["sessions"] == 0
        # An upload under north's id opens south's own session: ids are per owner, so another
        # owner's id is to south exactly an unknown one (it used to answer "already open").
        taken = client.post(MESSAGES_PATH, content=_upload("n1"), headers=as_south)
        assert taken.status_code == 200
        assert client.get("/v1/status", headers=as_south).json()["sessions"] == 1
        closed = client.post(MESSAGES_PATH, content=_close("n1"), headers=as_north)
        assert closed.status_code == 200
        assert client.get("/v1/status", headers=as_north).json()["sessions"] == 0
        assert client.get("/v1/status", headers=as_south).json()["sessions"] == 1
        assert client.post(MESSAGES_PATH, content=_close("n1"), headers=as_south
                           ).status_code == 200
        assert client.get("/v1/status", headers=as_south).json()["sessions"] == 0
        # Revoked: refused from the next request on, without a restart.
        remove_owner(path, "south")
        assert client.get("/v1/status", headers=as_south).status_code == 401
        assert client.get("/v1/status", headers=as_north).status_code == 200
        assert client.get("/v1/status", headers={"Authorization": north}).status_code == 401


def test_the_front_relays_nothing_it_cannot_attribute(centre: CentreProcess,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "owners"
    north = add_owner(path, "north")
    headers = {"Authorization": f"Bearer {north}", "Content-Type": CONTENT_TYPE}
    with TestClient(create_centre_app(centre, owners=OwnersFile(path))) as client:
        # A session the front never saw opened: refused before the centre.
        never = client.post(MESSAGES_PATH, content=_close("never-opened"), headers=headers)
        assert never.status_code == 400 and "unknown session 'never-opened'" in \
            never.json()["detail"]
        # An envelope the front cannot read (a session id that is no string, a stub).
        odd = p.Close(protocol_version=p.VERSION, session_id=5, round=2).to_bytes()  # type: ignore[arg-type]
        for body in (odd, b"CSMSG\x01"):
            refused = client.post(MESSAGES_PATH, content=body, headers=headers)
            assert refused.status_code == 400 and refused.json()["error"] == "ProtocolError"
        # Revoked and re-added under the same name: a new token, not the old sessions.
        assert client.post(MESSAGES_PATH, content=_upload("r1"), headers=headers).status_code \
            == 200
        remove_owner(path, "north")
        again = add_owner(path, "north")
        as_new = {"Authorization": f"Bearer {again}", "Content-Type": CONTENT_TYPE}
        assert client.post(MESSAGES_PATH, content=_close("r1"), headers=as_new).status_code \
            == 400
        assert client.get("/v1/status", headers=as_new).json()["sessions"] == 0


def test_an_unreadable_owners_file_refuses_every_request(centre: CentreProcess,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "owners"
    north = add_owner(path, "north")
    app = create_centre_app(centre, owners=OwnersFile(path))
    with TestClient(app) as client:
        path.write_text("garbage\n")
        answer = client.get("/v1/status", headers={"Authorization": f"Bearer {north}"})
        assert answer.status_code == 503 and "list of owners" in answer.json()["detail"]


def test_one_token_and_an_owners_file_are_exclusive(centre: CentreProcess,
                                                    tmp_path: Path) -> None:
    add_owner(tmp_path / "owners", "north")
    with pytest.raises(ParameterError, match="not both"):
        create_centre_app(centre, token="t" * 20, owners=OwnersFile(tmp_path / "owners"))


# --- the commands and the real service ---------------------------------------------------
def test_owner_commands(tmp_path: Path) -> None:
    owners, token_file = tmp_path / "owners", tmp_path / "north.token"
    runner = CliRunner()
    args = ["--owners-file", str(owners)]
    added = runner.invoke(cli_app, ["centre", "add-owner", "north", *args,
                                    "--token-out", str(token_file)])
    assert added.exit_code == 0, added.output
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert OwnersFile(owners).owner_of(token_file.read_text().strip()) == "north"
    again = runner.invoke(cli_app, ["centre", "add-owner", "south", *args,
                                    "--token-out", str(token_file)])
    assert again.exit_code == 2 and "exists; choose a new file" in _plain(again.output)
    listed = runner.invoke(cli_app, ["centre", "owners", *args])
    assert listed.exit_code == 0 and listed.output.split() == ["north"]
    assert token_file.read_text().strip() not in listed.output
    both = runner.invoke(cli_app, ["centre", "serve", *args, "--token-file",
                                   str(tmp_path / "t")])
    assert both.exit_code == 2 and "not both" in _plain(both.output)
    removed = runner.invoke(cli_app, ["centre", "remove-owner", "north", *args])
    assert removed.exit_code == 0
    empty = runner.invoke(cli_app, ["centre", "serve", *args])
    assert empty.exit_code == 2 and "names no owner yet" in _plain(empty.output)
    missing = runner.invoke(cli_app, ["centre", "serve", "--owners-file",
                                      str(tmp_path / "none")])
    assert missing.exit_code == 2 and "add-owner" in _plain(missing.output)


def test_a_fit_through_a_service_with_an_owners_file(tmp_path: Path) -> None:
    owners = tmp_path / "owners"
    north = tmp_path / "north.token"
    north.write_text(add_owner(owners, "north") + "\n")
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(c, 0.1, (400, 2)) for c in (-0.5, 0.5)])
    with CentreService(north, owners_file=owners) as url:
        with HttpTransport(url, token=north.read_text().strip()) as centre:
            km = EncryptedKMeans(n_clusters=2, init=X[[0, 400]], n_jobs=1).fit(X, centre=centre)
        with pytest.raises(TransportError, match="wrong access token"):
            HttpTransport(url, token="x" * 43).status()
    ref = KMeans(n_clusters=2, init=X[[0, 400]], n_init=1).fit(X)
    assert adjusted_rand_score(ref.labels_, km.labels_) == 1.0
    log = Path(str(north) + ".log").read_text()
    assert "owner north opened session" in log and north.read_text().strip() not in log


def test_a_foreign_session_id_is_indistinguishable_from_an_unknown_one(
        centre: CentreProcess, tmp_path: Path) -> None:
    path = tmp_path / "owners"
    north, south = add_owner(path, "north"), add_owner(path, "south")
    as_north = {"Authorization": f"Bearer {north}", "Content-Type": CONTENT_TYPE}
    as_south = {"Authorization": f"Bearer {south}", "Content-Type": CONTENT_TYPE}
    with TestClient(create_centre_app(centre, owners=OwnersFile(path))) as client:
        assert client.post(MESSAGES_PATH, content=_upload("x1"),
                           headers=as_north).status_code == 200
        start = p.InitStart(protocol_version=p.VERSION, session_id="x1", round=2)
        foreign = client.post(MESSAGES_PATH, content=start.to_bytes(), headers=as_south)
        unknown = client.post(MESSAGES_PATH, content=dataclasses.replace(
            start, session_id="x2").to_bytes(), headers=as_south)
        assert foreign.status_code == unknown.status_code == 400
        assert foreign.json()["detail"] == unknown.json()["detail"].replace("'x2'", "'x1'")
        # The centre itself scopes ids by sender too, behind the front.
        with pytest.raises(ProtocolError, match="unknown session 'x1'"):
            centre.request_bytes(start.to_bytes(), sender="someone-else")
        assert client.post(MESSAGES_PATH, content=_close("x1"),
                           headers=as_north).status_code == 200


def test_upload_shapes_are_refused_with_a_protocol_error_never_a_500(
        centre: CentreProcess, tmp_path: Path) -> None:
    owner = CkksSecretContext.generate(CkksParams.for_depth(1))
    blob = owner.encrypt_to_bytes(np.zeros(1))
    path = tmp_path / "owners"
    headers = {"Authorization": f"Bearer {add_owner(path, 'north')}",
               "Content-Type": CONTENT_TYPE}
    shapes = {"one block of 10^9": (10**9,), "a block beyond the slots": (4097,),
              "a short block before the last": (10, 4096), "an empty block": (0,)}
    with TestClient(create_centre_app(centre, owners=OwnersFile(path))) as client:
        for what, sizes in shapes.items():
            upload = p.Upload(protocol_version=p.VERSION, session_id=f"s-{len(sizes)}-{what}",
                              round=1, public_context=owner.public_bytes(),
                              n_samples=sum(sizes), n_features=1, n_clusters=1,
                              block_sizes=sizes, features=(blob,) * len(sizes))
            answer = client.post(MESSAGES_PATH, content=upload.to_bytes(), headers=headers)
            assert answer.status_code == 400, what
            assert answer.json()["error"] == "ProtocolError", what
            assert "block sizes must be 4096 customers each" in answer.json()["detail"], what
            start = p.InitStart(protocol_version=p.VERSION, session_id=upload.session_id,
                                round=2)
            after = client.post(MESSAGES_PATH, content=start.to_bytes(), headers=headers)
            assert after.status_code == 400 and "unknown session" in after.json()["detail"]
