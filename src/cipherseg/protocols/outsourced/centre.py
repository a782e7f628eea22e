"""The compute centre of protocol 4.1: the heavy ciphertext work, and no secret key.

It is constructed without keys; the data owner's ``Upload`` brings a *public* context, which
:meth:`~cipherseg.schemes.ckks.CkksPublicContext.from_bytes` refuses if it carries a secret
key. This module cannot import the key holder's code (import-linter contract in CI).

It is a sans-IO party (:mod:`cipherseg.protocols.party`): ``handle(sender, message)`` answers
each message with one message to its sender. Session ids are the sender's own: every sender
has its own namespace of sessions, so another sender's session id is, to a sender, exactly an
unknown one (a message for it is refused as for an unknown session; an upload under it opens
the sender's own session).
Hosting it as a process or a service: :mod:`cipherseg.hosting`. The message sequence and
what the centre learns: :mod:`cipherseg.protocols.outsourced`.

>>> centre = ComputeCentre()
>>> centre.holds_secret_key()
False
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cipherseg.engine.base import ONE_TASK_PER_WORKER, Executor
from cipherseg.engine.local import LocalExecutor
from cipherseg.errors import ParameterError, ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.outsourced import centre_ops
from cipherseg.protocols.outsourced import messages as p
from cipherseg.protocols.party import Outgoing
from cipherseg.schemes.ckks import CkksPublicContext


@dataclass
class _Session:
    key: str
    sender: str
    session_id: str
    ctx: CkksPublicContext
    n_features: int
    sizes: list[int]
    n_clusters: int = 0
    centres: list[list[Any]] = field(default_factory=list)  # broadcast, top level
    centroid_bytes: tuple[bytes, ...] = ()
    permutation: np.ndarray | None = None
    mask: tuple[int, int, np.ndarray] | None = None  # block, slot, masks (d × slots)
    expect: tuple[type[Message], ...] = (p.InitStart, p.Centroids, p.Close)
    round: int = 0
    last_active: float = 0.0


class ComputeCentre:
    """Server side of protocol 4.1 (a :class:`~cipherseg.protocols.party.Party`).

    Parameters
    ----------
    executor:
        Where block work runs (default: this process). See :mod:`cipherseg.engine`.
    random_state:
        Seed for the centre's own choices (first centre, block permutation, scale factor,
        masks). ``None`` draws from the operating system's CSPRNG; a seed is for tests only.
    session_idle_seconds:
        A session without a message for this long is dropped with its ciphertexts (checked
        whenever a message arrives) — for a long-running service, where an owner that dies
        half-way would otherwise leave its blocks in memory. ``None``: sessions live until
        their ``Close``.
    """

    name = "centre"

    def __init__(self, executor: Executor | None = None, random_state: int | None = None,
                 session_idle_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if session_idle_seconds is not None and session_idle_seconds <= 0:
            raise ParameterError(f"session_idle_seconds must be positive, got "
                                 f"{session_idle_seconds}")
        self._idle_limit = session_idle_seconds
        self._clock = clock
        self._executor = executor if executor is not None else LocalExecutor()
        seed = random_state if random_state is not None else secrets.randbits(128)
        self._rng = np.random.default_rng(seed)
        self._sessions: dict[tuple[str, str], _Session] = {}  # (sender, session id)

    def holds_secret_key(self) -> bool:
        """False by construction; checked by tests on every context the centre holds."""
        return any(s.ctx.is_private() for s in self._sessions.values())

    def contexts(self) -> list[CkksPublicContext]:
        return [s.ctx for s in self._sessions.values()]

    # --- the party contract -------------------------------------------------------------
    def handle(self, sender: str, message: Message) -> Outgoing:
        """The centre's one reply to ``sender``'s ``message``; a refusal raises
        :class:`~cipherseg.errors.ProtocolError` (or the scheme's error for bad ciphertexts)
        and leaves the session as it was."""
        return [(sender, self._answer(sender, message))]

    def _answer(self, sender: str, msg: Message) -> Message:
        self.drop_idle_sessions()
        if isinstance(msg, p.Upload):
            return self._upload(sender, msg)
        session = self._sessions.get((sender, msg.session_id))
        if session is None:
            raise p.unknown_session(msg.session_id)
        if not isinstance(msg, session.expect):
            wanted = ", ".join(t.__name__ for t in session.expect)
            raise ProtocolError(
                f"unexpected {type(msg).__name__} in session {msg.session_id!r}; expected {wanted}"
            )
        session.last_active = self._clock()
        session.round += 1
        handlers: dict[type[Message], Callable[[_Session, Any], Message]] = {
            p.InitStart: self._init_start, p.NewCentre: self._new_centre,
            p.MinScores: self._min_scores, p.Pick: self._pick, p.Centroids: self._centroids,
            p.Assignments: self._assignments, p.Close: self._close,
        }
        return handlers[type(msg)](session, msg)

    def drop_idle_sessions(self) -> None:
        """Drop sessions idle for longer than ``session_idle_seconds`` (also done on every
        message; a service calls it periodically too)."""
        if self._idle_limit is None:
            return
        cutoff = self._clock() - self._idle_limit
        for name in [name for name, s in self._sessions.items() if s.last_active < cutoff]:
            self._executor.drop_state(self._sessions.pop(name).key)

    # --- handlers ------------------------------------------------------------------------
    def _reply(self, cls: type[Message], session: _Session, **fields: Any) -> Message:
        return cls(protocol_version=p.VERSION, session_id=session.session_id,
                   round=session.round, **fields)

    def _upload(self, sender: str, msg: p.Upload) -> Message:
        if (sender, msg.session_id) in self._sessions:
            raise ProtocolError(f"session {msg.session_id!r} is already open; a new upload "
                                "needs a new session id")
        ctx = CkksPublicContext.from_bytes(msg.public_context)
        d = msg.n_features
        if d < 1 or len(msg.features) != d * len(msg.block_sizes):
            raise ProtocolError(
                f"upload has {len(msg.features)} ciphertexts for {len(msg.block_sizes)} blocks × "
                f"{d} features"
            )
        slots = ctx.params.slot_count
        sizes = msg.block_sizes
        if not sizes or any(not 1 <= b <= slots for b in sizes) \
                or any(b != slots for b in sizes[:-1]):
            raise ProtocolError(
                f"upload block sizes must be {slots} customers each but the last "
                f"(1 to {slots}); got {len(sizes)} blocks of {min(sizes, default=0)} to "
                f"{max(sizes, default=0)}"
            )
        if sum(sizes) != msg.n_samples:
            raise ProtocolError("block sizes do not add up to the number of customers")
        if not 1 <= msg.n_clusters <= msg.n_samples:
            raise ProtocolError(
                f"n_clusters={msg.n_clusters} must be between 1 and the {msg.n_samples} customers"
            )
        n_blocks = len(msg.block_sizes)
        key = f"centre-{uuid.uuid4().hex}"
        # The executor loads (and checks) the ciphertexts where block work runs; a sharding
        # executor keeps each block on one worker for the whole session.
        self._executor.put_blocks(key, centre_ops.build_centre_data, msg.public_context,
                                  [msg.features[b * d:(b + 1) * d] for b in range(n_blocks)])
        self._sessions[sender, msg.session_id] = _Session(key, sender, msg.session_id, ctx, d,
                                                          list(msg.block_sizes),
                                                  n_clusters=msg.n_clusters,
                                                  last_active=self._clock())
        return p.UploadAck(protocol_version=p.VERSION, session_id=msg.session_id, round=0,
                           n_blocks=n_blocks)

    def _init_start(self, s: _Session, msg: p.InitStart) -> Message:
        s.centres = []
        s.centroid_bytes = ()
        n = sum(s.sizes)
        index = int(self._rng.integers(n))
        block, slot = divmod(index, s.ctx.params.slot_count)
        s.expect = (p.NewCentre,)
        return self._masked_record(s, block, slot)

    def _masked_record(self, s: _Session, block: int, slot: int) -> Message:
        slots = s.ctx.params.slot_count
        bound = 2.0**p.MASK_BITS
        masks = self._rng.uniform(-bound, bound, size=(s.n_features, slots))
        s.mask = (block, slot, masks)
        (masked,) = self._executor.map_blocks(
            s.key, centre_ops.masked_task, lambda c: (s.key, c, masks), blocks=[block]
        )[0]
        return self._reply(p.MaskedRecord, s, slot=slot, masked=masked)

    def _new_centre(self, s: _Session, msg: p.NewCentre) -> Message:
        if s.mask is None or len(msg.centre) != s.n_features:
            raise ProtocolError("NewCentre must carry one ciphertext per feature")
        _, slot, masks = s.mask
        centre = [
            s.ctx.sub_plain(s.ctx.ciphertext_from_bytes(b), float(masks[f][slot]))
            for f, b in enumerate(msg.centre)
        ]
        s.mask = None
        s.centres.append(centre)
        # Serialise only the new centre: the earlier ones' bytes are already held.
        s.centroid_bytes += tuple(s.ctx.ciphertext_to_bytes(c) for c in centre)
        if len(s.centres) == s.n_clusters:
            s.expect = (p.Centroids, p.Close)
            low = tuple(s.ctx.ciphertext_to_bytes(s.ctx.mod_switch_to_last(c))
                        for row in s.centres for c in row)
            return self._reply(p.InitDone, s, centres=low)
        s.expect = (p.MinScores,)
        return self._scores(s, s.centroid_bytes, len(s.centres))

    def _scores(self, s: _Session, centroid_bytes: tuple[bytes, ...], m: int) -> Message:
        if m < 2:
            return self._reply(p.Scores, s, n_scores=0, scores=())
        results = self._executor.map_blocks(
            s.key, centre_ops.scores_task, lambda c: (s.key, c, centroid_bytes, m)
        )
        flat = tuple(b for chunk in results for block in chunk for b in block)
        return self._reply(p.Scores, s, n_scores=m - 1, scores=flat)

    def _min_scores(self, s: _Session, msg: p.MinScores) -> Message:
        n_blocks = len(s.sizes)
        mins: list[bytes | None]
        if len(s.centres) == 1:
            if msg.min_scores:
                raise ProtocolError("no scores were sent, so no minimum scores are expected")
            mins = [None] * n_blocks
        else:
            if len(msg.min_scores) != n_blocks:
                raise ProtocolError(f"expected {n_blocks} minimum-score ciphertexts")
            mins = list(msg.min_scores)
        d = s.n_features
        factor_max = max(1, int(2 ** (s.ctx.params.headroom_bits - 2) // (4 * d)))
        factor = int(self._rng.integers(1, factor_max + 1))
        c0 = s.centroid_bytes[:d]
        results = self._executor.map_blocks(
            s.key, centre_ops.d2_task, lambda c: (s.key, c, c0, [mins[b] for b in c], factor)
        )
        d2 = [b for chunk in results for b in chunk]
        perm = self._rng.permutation(n_blocks)
        s.permutation = perm
        s.expect = (p.Pick,)
        return self._reply(p.ShuffledD2, s, block_sizes=tuple(s.sizes[i] for i in perm),
                           d2=tuple(d2[i] for i in perm))

    def _pick(self, s: _Session, msg: p.Pick) -> Message:
        if s.permutation is None or not 0 <= msg.shuffled_block < len(s.sizes):
            raise ProtocolError("pick refers to no shuffled block")
        block = int(s.permutation[msg.shuffled_block])
        if not 0 <= msg.slot < s.sizes[block]:
            raise ProtocolError("pick refers to an empty slot")
        s.permutation = None
        s.expect = (p.NewCentre,)
        return self._masked_record(s, block, msg.slot)

    def _centroids(self, s: _Session, msg: p.Centroids) -> Message:
        k, d = s.n_clusters, s.n_features
        if msg.centroids:
            if len(msg.centroids) != k * d:
                raise ProtocolError(f"expected {k}×{d} centroid ciphertexts")
            s.centroid_bytes = tuple(msg.centroids)
        s.expect = (p.Assignments, p.Centroids, p.Close)
        return self._scores(s, s.centroid_bytes, k)

    def _assignments(self, s: _Session, msg: p.Assignments) -> Message:
        k, n_blocks = s.n_clusters, len(s.sizes)
        if len(msg.onehots) != (k - 1) * n_blocks:
            raise ProtocolError(f"expected {(k - 1) * n_blocks} one-hot ciphertexts")
        per_block = [tuple(msg.onehots[b * (k - 1):(b + 1) * (k - 1)]) for b in range(n_blocks)]
        # One task per worker: each partial costs the front k·(d+1) ciphertext loads and
        # additions, and each task k·d relinearisations, so fewer partials is less serial work.
        results = self._executor.map_blocks(
            s.key, centre_ops.sums_task, lambda c: (s.key, c, [per_block[b] for b in c]),
            blocks_per_task=ONE_TASK_PER_WORKER,
        ) if k > 1 else []
        out = centre_ops.add_partials(s.ctx, [part for part in results if part])
        d = s.n_features
        s.expect = (p.Centroids, p.Close)
        return self._reply(p.Sums, s, sums=out[:(k - 1) * d], counts=out[(k - 1) * d:])

    def _close(self, s: _Session, msg: p.Close) -> Message:
        self._executor.drop_state(s.key)
        reply = self._reply(p.CloseAck, s)
        del self._sessions[s.sender, s.session_id]
        return reply
