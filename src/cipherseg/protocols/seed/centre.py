"""The compute centre of protocol 4.4: additions and linear transformations on VHE
ciphertexts, with the centroids in plaintext (the leak of the original design).

A sans-IO party (:mod:`cipherseg.protocols.party`); the sequence and the leakage:
:mod:`cipherseg.protocols.seed`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Outgoing
from cipherseg.protocols.seed.messages import (
    VERSION,
    SeedCentroids,
    SeedClose,
    SeedCloseAck,
    SeedLabels,
    SeedScores,
    SeedSums,
    SeedUpload,
    SeedUploadAck,
)
from cipherseg.protocols.seed.params import (
    split_digits,
)
from cipherseg.schemes.vhe import (
    KeySwitchKey,
    VHECiphertexts,
    VHEContext,
    VHEParams,
    stack,
)


@dataclass
class _CentreSession:
    ctx: VHEContext
    n_clusters: int
    data: VHECiphertexts  # (n, d + m)
    features: VHECiphertexts  # (n, d, 1 + m) under S1
    centroids: npt.NDArray[np.int64] | None = None
    history: list[list[list[int]]] = field(default_factory=list)
    expect: tuple[type[Message], ...] = (SeedCentroids, SeedClose)
    round: int = 0


class SeedComputeCentre:
    """Server side of the seed mode: additions and linear transformations on VHE ciphertexts.

    It never receives a :class:`~cipherseg.schemes.vhe_keys.VHESecretKey`; what it does
    receive is enough to recover one (see the module docstring). ``history`` keeps the
    plaintext centroids it was shown, to make that leak visible.

    >>> centre = SeedComputeCentre()
    >>> centre.holds_secret_key()
    False
    """

    name = "centre"

    def __init__(self) -> None:
        self._sessions: dict[str, _CentreSession] = {}
        self.seconds: dict[str, float] = defaultdict(float)

    def holds_secret_key(self) -> bool:
        """Whether any session holds something other than public material: every field must
        be one of the public types a session is made of (an allowlist, so this module never
        imports the key holder's code to recognise a key)."""
        public = (VHEContext, VHECiphertexts, np.ndarray, int, list, tuple, type(None))
        return any(not isinstance(v, public) for s in self._sessions.values()
                   for v in vars(s).values())

    def centroid_history(self, session_id: str) -> list[list[list[int]]]:
        """The plaintext centroids the centre saw in ``session_id`` (the leak, made visible)."""
        return self._sessions[session_id].history

    def handle(self, sender: str, message: Message) -> Outgoing:
        """The centre's one reply to ``sender``'s ``message`` (the party contract)."""
        return [(sender, self._answer(message))]

    def _answer(self, msg: Message) -> Message:
        if isinstance(msg, SeedUpload):
            return self._upload(msg)
        session = self._sessions.get(msg.session_id)
        if session is None:
            raise ProtocolError(f"unknown session {msg.session_id!r}; upload the data first")
        if not isinstance(msg, session.expect):
            wanted = ", ".join(t.__name__ for t in session.expect)
            raise ProtocolError(
                f"unexpected {type(msg).__name__} in session {msg.session_id!r}; expected {wanted}"
            )
        session.round += 1
        if isinstance(msg, SeedCentroids):
            return self._scores(msg, session)
        if isinstance(msg, SeedLabels):
            return self._sums(msg, session)
        del self._sessions[msg.session_id]
        return SeedCloseAck(protocol_version=VERSION, session_id=msg.session_id,
                            round=session.round)

    def _upload(self, msg: SeedUpload) -> Message:
        t0 = time.perf_counter()
        params = VHEParams.from_json(msg.params_json)
        ctx = VHEContext(params)
        data = ctx.ciphertexts_from_bytes(msg.ciphertexts)
        keys: list[KeySwitchKey] = [ctx.key_from_bytes(b) for b in msg.feature_keys]
        if data.data.ndim != 2 or data.plain_dim != params.dim:
            raise ProtocolError("upload must hold one ciphertext of the d features per customer")
        if len(keys) != params.dim:
            raise ProtocolError(f"expected {params.dim} per-feature keys, got {len(keys)}")
        if not 1 <= msg.n_clusters <= data.data.shape[0]:
            raise ProtocolError(f"n_clusters={msg.n_clusters} must be between 1 and the number "
                                f"of customers ({data.data.shape[0]})")
        per_feature = ctx.key_switch_many(data, keys)
        if len({c.key_id for c in per_feature}) != 1:
            raise ProtocolError("the per-feature keys must share one output key")
        features = stack(per_feature)  # (d, n, 1 + m)
        features = VHECiphertexts(np.moveaxis(features.data, 0, 1), features.key_id,
                                  features.plain_dim, features.noise_bound, features.value_bound)
        self._sessions[msg.session_id] = _CentreSession(ctx, msg.n_clusters, data, features)
        self.seconds["transform"] += time.perf_counter() - t0
        return SeedUploadAck(protocol_version=VERSION, session_id=msg.session_id, round=0,
                             n_samples=int(data.data.shape[0]))

    def _scores(self, msg: SeedCentroids, s: _CentreSession) -> Message:
        t0 = time.perf_counter()
        k, d = s.n_clusters, s.ctx.params.dim
        if len(msg.centroids) != k * d:
            raise ProtocolError(f"expected {k}×{d} centroid entries, got {len(msg.centroids)}")
        if not 1 <= msg.digit_bits <= 62:
            raise ProtocolError(f"digit_bits must be in [1, 62], got {msg.digit_bits}")
        mu = np.array(msg.centroids, dtype=object).reshape(k, d)
        s.history.append([[int(v) for v in row] for row in mu])
        digits = split_digits(mu, msg.digit_bits)  # (D, k, d)
        coeffs = digits.reshape(-1, d)
        scores = s.ctx.combine(s.features, coeffs, axis=1)  # (n, D·k, 1 + m)
        out = s.ctx.ciphertexts_to_bytes(scores)
        s.expect = (SeedLabels, SeedCentroids, SeedClose)
        self.seconds["scores"] += time.perf_counter() - t0
        return SeedScores(protocol_version=VERSION, session_id=msg.session_id, round=s.round,
                          n_digits=int(digits.shape[0]), scores=out)

    def _sums(self, msg: SeedLabels, s: _CentreSession) -> Message:
        t0 = time.perf_counter()
        labels = np.frombuffer(msg.labels, dtype="<i4").astype(np.int64)
        if labels.shape[0] != s.data.data.shape[0]:
            raise ProtocolError("one label per customer expected")
        sums, counts = s.ctx.sum_by_label(s.data, labels, s.n_clusters)
        s.expect = (SeedCentroids, SeedClose)
        self.seconds["sums"] += time.perf_counter() - t0
        return SeedSums(protocol_version=VERSION, session_id=msg.session_id, round=s.round,
                        sums=s.ctx.ciphertexts_to_bytes(sums),
                        counts=tuple(int(c) for c in counts))
