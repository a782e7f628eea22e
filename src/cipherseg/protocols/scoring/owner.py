"""The data owner of protocol 4.3: encodes, encrypts, sends its customers' features and
decrypts their scores.

It holds the CKKS secret key through any key holder that offers ``public_bytes``,
``encrypt_to_bytes`` and ``decrypt_bytes``
(:class:`cipherseg.schemes.ckks_keys.CkksSecretContext`), which this module does not import.
It learns its own customers' scores (and approximate probabilities); it must not hand them
back to the centre (see :mod:`cipherseg.protocols.scoring`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from cipherseg.encoding import FixedPointEncoder
from cipherseg.errors import EncodingError, ParameterError, ProtocolError, ValidationError
from cipherseg.protocols.party import Link
from cipherseg.protocols.scoring.messages import (
    PROTOCOL_VERSION,
    EncryptedFeatures,
    EncryptedScores,
    ScoringReady,
    ScoringSetup,
)
from cipherseg.protocols.scoring.sigmoid import (
    SIGMOID_DEPTH,
    SigmoidApproximation,
    sigmoid_params,
)
from cipherseg.schemes.ckks import CkksParams


class OwnerKeys(Protocol):
    """What the scoring owner needs from a key holder (CkksSecretContext provides it)."""

    params: CkksParams

    @property
    def rescaled_scale(self) -> float: ...

    def public_bytes(self) -> bytes: ...

    def encrypt_to_bytes(self, values: npt.ArrayLike, *, at_last_level: bool = False,
                         scale: float | None = None) -> bytes: ...

    def decrypt_bytes(self, data: bytes, size: int | None = None
                      ) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True, slots=True)
class ScoringResult:
    """Decrypted scores (and approximate probabilities) with the run's costs."""

    scores: npt.NDArray[np.float64]
    probabilities: npt.NDArray[np.float64] | None
    n_blocks: int
    bytes_to_centre: int
    bytes_to_owner: int
    encrypt_seconds: float
    centre_seconds: float
    decrypt_seconds: float


class ScoringOwner:
    """The data owner's side: encodes, encrypts, sends, decrypts.

    Parameters
    ----------
    keys:
        The owner's key holder (a :class:`~cipherseg.schemes.ckks_keys.CkksSecretContext`).
    weights, bias:
        The linear model on the encoded features.
    encrypt_model:
        Send the weights and bias encrypted, so the centre learns nothing about the model.
    sigmoid:
        Also compute approximate probabilities under encryption (needs depth 3).
    decimals:
        Fixed-point quantisation of features before encryption (shared with the other
        schemes, see :mod:`cipherseg.encoding`).
    """

    def __init__(self, keys: OwnerKeys, weights: Sequence[float] | npt.ArrayLike, bias: float,
                 *, encrypt_model: bool = False, sigmoid: SigmoidApproximation | None = None,
                 decimals: int = 8, session_id: str | None = None) -> None:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.size == 0 or not np.all(np.isfinite(w)) or not np.isfinite(bias):
            raise ValidationError("model weights must be a non-empty vector of finite numbers "
                                  "and the bias a finite number")
        needed = 1 + (SIGMOID_DEPTH if sigmoid is not None else 0)
        if keys.params.depth < needed:
            raise ParameterError(
                f"the CKKS parameters have depth {keys.params.depth}; scoring "
                f"{'with the sigmoid ' if sigmoid else ''}needs depth {needed} "
                f"(e.g. {sigmoid_params() if sigmoid else CkksParams.for_depth(1)})"
            )
        self.keys = keys
        self.weights = w
        self.bias = float(bias)
        self.encrypt_model = encrypt_model
        self.sigmoid = sigmoid
        self.encoder = FixedPointEncoder(decimals=decimals)
        self.session_id = session_id or uuid.uuid4().hex

    def setup_message(self, n_customers: int) -> ScoringSetup:
        common: dict[str, Any] = {
            "protocol_version": PROTOCOL_VERSION, "session_id": self.session_id, "round": 0,
            "public_context": self.keys.public_bytes(), "n_customers": n_customers,
            "n_features": int(self.weights.size),
            "sigmoid_coefficients": self.sigmoid.coefficients if self.sigmoid else (),
        }
        if self.encrypt_model:
            slots = self.keys.params.slot_count
            enc = tuple(self.keys.encrypt_to_bytes(np.full(slots, w)) for w in self.weights)
            bias = self.keys.encrypt_to_bytes(np.full(slots, self.bias), at_last_level=False,
                                              scale=self.keys.rescaled_scale)
            return ScoringSetup(**common, encrypted_weights=enc, encrypted_bias=bias)
        return ScoringSetup(**common, weights=tuple(float(v) for v in self.weights),
                            bias=self.bias)

    def encode(self, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Validate and quantise an (n_customers, n_features) matrix."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != self.weights.size:
            raise ValidationError(
                f"features must be a non-empty 2-D array with {self.weights.size} columns "
                f"(one per model weight); got shape {x.shape}"
            )
        try:
            return self.encoder.quantise(x)
        except EncodingError as exc:
            raise EncodingError(f"cannot encode the features for encryption: {exc}") from exc

    def run(self, features: npt.ArrayLike, link: Link,
            progress: Callable[[int, int], None] | None = None) -> ScoringResult:
        """Score every row of ``features`` with the centre at the other end of ``link``.

        Any transport serves (:class:`~cipherseg.protocols.party.PartyLink` in this process,
        process pipes, HTTP); a reply of another type or session raises
        :class:`~cipherseg.errors.ProtocolError`.
        """
        x = self.encode(features)
        n = x.shape[0]
        slots = self.keys.params.slot_count
        enc_s = dec_s = 0.0
        t0 = time.perf_counter()
        setup = self.setup_message(n)
        enc_s += time.perf_counter() - t0
        before = link.stats.snapshot()
        ready = link.request(setup, expect=ScoringReady)
        n_blocks = -(-n // slots)
        if ready.n_blocks != n_blocks:
            raise ProtocolError(
                f"scoring: centre expects {ready.n_blocks} blocks, owner has {n_blocks}"
            )
        scores = np.empty(n)
        probs = np.empty(n) if self.sigmoid else None
        centre_s = 0.0
        for b in range(n_blocks):
            rows = x[b * slots:(b + 1) * slots]
            t0 = time.perf_counter()
            cols = tuple(self.keys.encrypt_to_bytes(rows[:, j]) for j in range(rows.shape[1]))
            msg = EncryptedFeatures(protocol_version=PROTOCOL_VERSION,
                                    session_id=self.session_id, round=b + 1, block=b,
                                    n_rows=rows.shape[0], columns=cols)
            enc_s += time.perf_counter() - t0
            centre_before = time.perf_counter()
            reply = link.request(msg, expect=EncryptedScores)
            centre_s += time.perf_counter() - centre_before
            if reply.block != b or reply.n_rows != rows.shape[0]:
                raise ProtocolError(
                    f"scoring: the reply for block {b} ({rows.shape[0]} customers) is for "
                    f"block {reply.block} ({reply.n_rows} customers)")
            t0 = time.perf_counter()
            k = rows.shape[0]
            scores[b * slots:b * slots + k] = self.keys.decrypt_bytes(reply.scores, k)
            if probs is not None:
                if not reply.probabilities:
                    raise ProtocolError("scoring: the centre sent no probabilities")
                probs[b * slots:b * slots + k] = self.keys.decrypt_bytes(reply.probabilities, k)
            dec_s += time.perf_counter() - t0
            if progress is not None:
                progress(b + 1, n_blocks)
        after = link.stats.snapshot()
        return ScoringResult(scores, probs, n_blocks, after[0] - before[0],
                             after[1] - before[1], enc_s, centre_s, dec_s)
