"""Protocol 4.1 at the message level: custody, ordering, malformed requests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tenseal.sealapi as seal

from cipherseg.engine.state import has_state
from cipherseg.errors import KeyCustodyError, ParameterError, ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.outsourced import messages as p
from cipherseg.protocols.outsourced.centre import ComputeCentre
from cipherseg.protocols.outsourced.owner import DataOwner
from cipherseg.protocols.party import Outgoing, PartyLink
from cipherseg.schemes.ckks import CkksParams, pack_context_bytes, unpack_context_bytes
from cipherseg.schemes.ckks_keys import CkksSecretContext
from cipherseg.transport.inprocess import InProcessTransport
from object_graph import reachable

OWNER = "owner"


def _upload(owner: CkksSecretContext, X: np.ndarray, k: int, sid: str = "s") -> p.Upload:
    feats = tuple(owner.encrypt_to_bytes(X[:, f]) for f in range(X.shape[1]))
    return p.Upload(protocol_version=1, session_id=sid, round=1,
                    public_context=owner.public_bytes(), n_samples=len(X),
                    n_features=X.shape[1], n_clusters=k, block_sizes=(len(X),), features=feats)


@pytest.fixture(scope="module")
def owner() -> CkksSecretContext:
    return CkksSecretContext.generate(CkksParams.for_depth(1))


def test_centre_state_holds_no_secret_key_during_a_run() -> None:
    X = np.random.default_rng(0).uniform(-1, 1, (500, 3))
    centre = ComputeCentre(random_state=0)
    link = PartyLink(centre, sender="owner")
    snapshots: list[list[object]] = []

    def spy(data: bytes) -> bytes:
        reply = link.request_bytes(data)
        snapshots.append(reachable(centre))
        return reply

    DataOwner(random_state=0).run_kmeans(X, 3, InProcessTransport(spy), max_iter=3, tol=0.0)
    assert snapshots
    for objects in snapshots:
        assert not any(isinstance(o, seal.SecretKey) for o in objects)
        assert not any(isinstance(o, (seal.Decryptor, CkksSecretContext)) for o in objects)
    assert not centre.holds_secret_key()


def test_centre_refuses_an_upload_carrying_a_secret_key(owner: CkksSecretContext) -> None:
    msg = _upload(owner, np.zeros((10, 2)), 2)
    fields = unpack_context_bytes(msg.public_context)
    fields["secret_key"] = b"\x00" * 64
    bad = dataclasses.replace(msg, public_context=pack_context_bytes(fields))
    with pytest.raises(KeyCustodyError):
        ComputeCentre().handle(OWNER, bad)


def test_messages_out_of_order_are_refused(owner: CkksSecretContext) -> None:
    centre = ComputeCentre(random_state=0)
    centre.handle(OWNER, _upload(owner, np.zeros((10, 2)), 2))
    with pytest.raises(ProtocolError, match=r"unexpected Pick .* expected InitStart, Centroids"):
        centre.handle(OWNER, p.Pick(protocol_version=1, session_id="s", round=2))
    with pytest.raises(ProtocolError, match="unknown session 'nope'"):
        centre.handle(OWNER, p.InitStart(protocol_version=1, session_id="nope", round=2))


def test_idle_sessions_expire_and_active_ones_stay(owner: CkksSecretContext) -> None:
    X = np.random.default_rng(0).uniform(-1, 1, (50, 2))
    now = [0.0]
    centre = ComputeCentre(random_state=0, session_idle_seconds=10.0, clock=lambda: now[0])
    centre.handle(OWNER, _upload(owner, X, 2, sid="idle"))
    centre.handle(OWNER, _upload(owner, X, 2, sid="busy"))
    idle_blocks = centre._sessions[OWNER, "idle"].key
    assert has_state(idle_blocks)
    now[0] = 6.0
    centre.handle(OWNER, p.InitStart(protocol_version=1, session_id="busy", round=2))
    now[0] = 12.0  # "idle" has been silent 12 s, "busy" 6 s
    with pytest.raises(ProtocolError, match=r"unknown session 'idle' .*expired"):
        centre.handle(OWNER, p.InitStart(protocol_version=1, session_id="idle", round=2))
    assert len(centre.contexts()) == 1
    assert not has_state(idle_blocks)  # its ciphertexts are gone with it
    now[0] = 30.0
    centre.drop_idle_sessions()  # what the service's periodic sweep calls
    assert centre.contexts() == []
    with pytest.raises(ParameterError, match="must be positive"):
        ComputeCentre(session_idle_seconds=0)


def test_an_upload_cannot_replace_an_open_session(owner: CkksSecretContext) -> None:
    centre = ComputeCentre(random_state=0)
    centre.handle(OWNER, _upload(owner, np.zeros((10, 2)), 2, sid="taken"))
    with pytest.raises(ProtocolError, match="'taken' is already open"):
        centre.handle(OWNER, _upload(owner, np.zeros((10, 2)), 2, sid="taken"))
    assert len(centre.contexts()) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_clusters": 0}, "n_clusters=0 must be between 1"),
        ({"n_clusters": 11}, "n_clusters=11 must be between 1"),
        ({"n_samples": 9}, "block sizes do not add up"),
        ({"features": ()}, "upload has 0 ciphertexts for 1 blocks"),
    ],
)
def test_inconsistent_uploads_are_refused(owner: CkksSecretContext, change: dict[str, object],
                                          message: str) -> None:
    msg = _upload(owner, np.zeros((10, 2)), 2)
    bad = dataclasses.replace(msg, **change)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=message):
        ComputeCentre().handle(OWNER, bad)


def test_wrong_number_of_one_hots_is_refused(owner: CkksSecretContext) -> None:
    centre = ComputeCentre(random_state=0)
    centre.handle(OWNER, _upload(owner, np.zeros((10, 2)), 3))
    cents = tuple(owner.encrypt_to_bytes(0.0) for _ in range(6))
    centre.handle(OWNER, p.Centroids(protocol_version=1, session_id="s", round=2, centroids=cents))
    with pytest.raises(ProtocolError, match="expected 2 one-hot ciphertexts"):
        centre.handle(OWNER, p.Assignments(protocol_version=1, session_id="s", round=3,
                                    onehots=(owner.encrypt_to_bytes(0.0),)))


def test_bytes_per_direction_are_counted() -> None:
    X = np.random.default_rng(1).uniform(-1, 1, (300, 2))
    transport = PartyLink(ComputeCentre(random_state=0), sender=OWNER)
    run = DataOwner(random_state=0).run_kmeans(X, 2, transport, max_iter=2, tol=0.0)
    assert run.bytes_to_centre == transport.stats.bytes_to_server > 0
    assert run.bytes_to_owner == transport.stats.bytes_to_client > 0
    assert sum(run.bytes_per_iteration) < run.bytes_to_centre + run.bytes_to_owner


def test_a_session_answers_only_the_sender_that_uploaded_it(owner: CkksSecretContext) -> None:
    centre = ComputeCentre(random_state=0)
    centre.handle(OWNER, _upload(owner, np.zeros((10, 2)), 2, sid="mine"))
    start = p.InitStart(protocol_version=1, session_id="mine", round=2)
    with pytest.raises(ProtocolError) as foreign:
        centre.handle("owner-2", start)
    with pytest.raises(ProtocolError) as unknown:
        centre.handle("owner-2", dataclasses.replace(start, session_id="other"))
    # Indistinguishable from an unknown session, but for the id the sender gave itself.
    assert str(foreign.value) == str(unknown.value).replace("'other'", "'mine'")
    ((to, reply),) = centre.handle(OWNER, start)  # the owner's session is untouched
    assert to == OWNER and isinstance(reply, p.MaskedRecord)


class _Substituting(ComputeCentre):
    """Answers the ``at``-th message of type ``request`` with a reply of the wrong type."""

    def __init__(self, request: type[Message]) -> None:
        super().__init__(random_state=0)
        self.request = request

    def handle(self, sender: str, message: Message) -> Outgoing:
        out = super().handle(sender, message)
        if isinstance(message, self.request):
            wrong = p.CloseAck if not isinstance(out[0][1], p.CloseAck) else p.UploadAck
            return [(sender, wrong(protocol_version=1, session_id=message.session_id,
                                   round=message.round))]
        return out


@pytest.mark.parametrize("request_type", [p.Upload, p.InitStart, p.NewCentre, p.MinScores,
                                          p.Pick, p.Centroids, p.Assignments, p.Close],
                         ids=lambda t: t.__name__)
def test_every_reply_of_the_wrong_type_is_a_protocol_error(request_type: type[Message]) -> None:
    X = np.vstack([np.random.default_rng(0).normal(c, 0.1, (40, 2)) for c in (-0.5, 0.5)])
    link = PartyLink(_Substituting(request_type), sender=OWNER)
    with pytest.raises(ProtocolError, match=rf"expected \w+ in reply to {request_type.__name__}"):
        DataOwner(random_state=0).run_kmeans(X, 3, link, max_iter=2, tol=0.0)


def test_a_reply_for_another_session_is_a_protocol_error() -> None:
    class Elsewhere(ComputeCentre):
        def handle(self, sender: str, message: Message) -> Outgoing:
            ((to, reply),) = super().handle(sender, message)
            if isinstance(reply, p.Sums):
                reply = dataclasses.replace(reply, session_id="someone-else")
            return [(to, reply)]

    X = np.random.default_rng(1).uniform(-1, 1, (50, 2))
    with pytest.raises(ProtocolError, match="reply to Assignments is for session 'someone-else'"):
        DataOwner(random_state=0).run_kmeans(X, 2, PartyLink(Elsewhere(random_state=0),
                                                             sender=OWNER), max_iter=2, tol=0.0)
