"""The compute centre of protocol 4.3: evaluates w·x + b (and the cubic sigmoid) on CKKS
ciphertexts under the owner's key.

It holds the public context only — never a secret key (a set-up whose context can decrypt is
refused with :class:`~cipherseg.errors.KeyCustodyError`, and the import-linter contract keeps
:mod:`cipherseg.schemes.ckks_keys` out of this module) — and learns what
:mod:`cipherseg.protocols.scoring` lists: the sizes, the sigmoid's coefficients and, unless the
model is encrypted, the model; never a feature, a score or a probability.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Outgoing
from cipherseg.protocols.scoring.messages import (
    CENTRE,
    PROTOCOL_VERSION,
    EncryptedFeatures,
    EncryptedScores,
    ScoringReady,
    ScoringSetup,
    check_version,
)
from cipherseg.protocols.scoring.sigmoid import SIGMOID_DEPTH
from cipherseg.schemes.ckks import CkksPublicContext


class ScoringCentre:
    """The compute centre's side: holds the public context and the model it was sent.

    A party of the common contract (:mod:`cipherseg.protocols.party`): ``handle(sender,
    message)`` answers each message with exactly one message to its sender, so any transport
    serves it (:func:`~cipherseg.protocols.party.respond`). A set-up carrying a secret key is
    refused with :class:`~cipherseg.errors.KeyCustodyError`.

    Examples
    --------
    >>> ScoringCentre().handle("owner", EncryptedFeatures(protocol_version=1, session_id="s",
    ...                                                   round=1))
    Traceback (most recent call last):
    ...
    cipherseg.errors.ProtocolError: scoring: features arrived before ScoringSetup; send the \
set-up first
    """

    name = CENTRE

    def __init__(self) -> None:
        self._ctx: CkksPublicContext | None = None
        self._setup: ScoringSetup | None = None
        self._weights: list[tuple[int, Any]] = []
        self._enc_weights: list[Any] = []
        self._enc_bias: Any = None
        self._n_blocks = 0
        self._done: set[int] = set()
        self.compute_seconds = 0.0

    def handle(self, sender: str, message: Message) -> Outgoing:
        """The one reply to ``sender``'s set-up or block of features."""
        if isinstance(message, ScoringSetup):
            return [(sender, self._on_setup(message))]
        if isinstance(message, EncryptedFeatures):
            return [(sender, self._on_features(message))]
        raise ProtocolError(
            f"scoring: the centre does not accept {type(message).__name__} messages"
        )

    # ------------------------------------------------------------------------------------
    def _on_setup(self, m: ScoringSetup) -> ScoringReady:
        check_version(m)
        if m.round != 0:
            raise ProtocolError(f"scoring: ScoringSetup must be round 0, got {m.round}")
        ctx = CkksPublicContext.from_bytes(m.public_context)
        if m.n_features < 1 or m.n_customers < 1:
            raise ProtocolError(
                f"scoring: need at least one customer and one feature, got "
                f"{m.n_customers} customers, {m.n_features} features"
            )
        plain = len(m.weights) > 0
        encrypted = len(m.encrypted_weights) > 0
        if plain == encrypted:
            raise ProtocolError(
                "scoring: send the model either as plaintext weights or as encrypted weights "
                "(exactly one of the two)"
            )
        count = len(m.weights) if plain else len(m.encrypted_weights)
        if count != m.n_features:
            raise ProtocolError(
                f"scoring: {count} weights for {m.n_features} features; the model must have "
                "one weight per encoded feature"
            )
        sig = m.sigmoid_coefficients
        if sig and (len(sig) != 4 or sig[2] != 0.0):
            raise ProtocolError("scoring: sigmoid coefficients must be (c0, c1, 0, c3)")
        needed = 1 + (SIGMOID_DEPTH if sig else 0)
        if ctx.params.depth < needed:
            raise ProtocolError(
                f"scoring: the context has multiplicative depth {ctx.params.depth}; scoring "
                f"{'with the sigmoid ' if sig else ''}needs {needed}"
            )
        self._weights, self._enc_weights, self._enc_bias = [], [], None
        if plain:
            if not all(np.isfinite(w) for w in (*m.weights, m.bias)):
                raise ProtocolError("scoring: model weights and bias must be finite numbers")
            scale = ctx.params.scale
            # A constant that encodes to 0 would make SEAL's product "transparent" (all-zero
            # mask); its contribution is below the encoding precision, so it is skipped.
            self._weights = [(j, w) for j, w in enumerate(m.weights)
                             if round(abs(w) * scale) >= 1]
        else:
            self._enc_weights = [ctx.ciphertext_from_bytes(b) for b in m.encrypted_weights]
            self._enc_bias = ctx.ciphertext_from_bytes(m.encrypted_bias)
        self._ctx, self._setup = ctx, m
        self._n_blocks = -(-m.n_customers // ctx.params.slot_count)
        self._done = set()
        return ScoringReady(protocol_version=PROTOCOL_VERSION, session_id=m.session_id,
                            round=0, n_blocks=self._n_blocks)

    def _on_features(self, m: EncryptedFeatures) -> EncryptedScores:
        check_version(m)
        ctx, setup = self._ctx, self._setup
        if ctx is None or setup is None:
            raise ProtocolError("scoring: features arrived before ScoringSetup; send the "
                                "set-up first")
        if m.session_id != setup.session_id:
            raise ProtocolError(
                f"scoring: message for session {m.session_id!r}, this centre runs "
                f"{setup.session_id!r}"
            )
        if not 0 <= m.block < self._n_blocks or m.round != m.block + 1:
            raise ProtocolError(
                f"scoring: block {m.block} (round {m.round}) is outside the announced "
                f"{self._n_blocks} block(s); rounds are block + 1"
            )
        if m.block in self._done:
            raise ProtocolError(f"scoring: block {m.block} was already scored")
        expected_rows = min(ctx.params.slot_count,
                            setup.n_customers - m.block * ctx.params.slot_count)
        if m.n_rows != expected_rows:
            raise ProtocolError(
                f"scoring: block {m.block} should hold {expected_rows} customers, got "
                f"{m.n_rows}"
            )
        if len(m.columns) != setup.n_features:
            raise ProtocolError(
                f"scoring: {len(m.columns)} feature ciphertexts, expected {setup.n_features}"
            )
        columns = [ctx.ciphertext_from_bytes(b) for b in m.columns]
        start = time.perf_counter()
        score = self._linear(ctx, setup, columns)
        prob = b""
        if setup.sigmoid_coefficients:
            prob = ctx.ciphertext_to_bytes(
                cubic(ctx, score, setup.sigmoid_coefficients)
            )
        score_out = ctx.ciphertext_to_bytes(ctx.mod_switch_to_last(score))
        self.compute_seconds += time.perf_counter() - start
        self._done.add(m.block)
        return EncryptedScores(protocol_version=PROTOCOL_VERSION, session_id=m.session_id,
                               round=m.round, block=m.block, n_rows=m.n_rows,
                               scores=score_out, probabilities=prob)

    def _linear(self, ctx: CkksPublicContext, setup: ScoringSetup, columns: list[Any]) -> Any:
        acc: Any = None
        if self._enc_weights:
            for ct, w in zip(columns, self._enc_weights, strict=True):
                term = ctx.multiply(ct, w)
                if acc is None:
                    acc = term
                else:
                    ctx.add_inplace(acc, term)
            acc = ctx.rescale(ctx.relinearize(acc))
            bias = self._enc_bias
            if bias.parms_id() != acc.parms_id():
                bias = _mod_switch_to(ctx, bias, acc.parms_id())
            bias.scale = acc.scale  # same nominal scale; values agree to double precision
            return ctx.add(acc, bias)
        for j, w in self._weights:
            term = ctx.multiply_plain(columns[j], w)
            if acc is None:
                acc = term
            else:
                ctx.add_inplace(acc, term)
        if acc is None:  # every weight is (numerically) zero: the score is the bias
            acc = ctx.multiply_plain(ctx.encrypt_public(np.zeros(1)), 1.0)
        acc = ctx.rescale(acc)
        return ctx.add_plain(acc, setup.bias)


def _mod_switch_to(ctx: CkksPublicContext, ct: Any, parms_id: Any) -> Any:
    import tenseal.sealapi as seal

    out = seal.Ciphertext()
    ctx.evaluator.mod_switch_to(ct, parms_id, out)
    return out


def cubic(ctx: CkksPublicContext, x: Any, coeffs: Sequence[float]) -> Any:
    """c0 + c1·x + c3·x³ on a ciphertext at one level below the top; uses two more levels."""
    c0, c1, _c2, c3 = coeffs
    # x² and c3·x, both one level lower.
    # c3 is encoded at x's own scale so that c3·x lands on exactly x²'s scale.
    x2 = ctx.rescale(ctx.relinearize(ctx.square(x)))
    c3x = ctx.rescale(_multiply_plain_at(ctx, x, c3, x.scale))
    cubic = ctx.rescale(ctx.relinearize(ctx.multiply(x2, c3x)))
    # c1·x brought to the cubic's level and exact scale: multiply by c1 encoded at the scale
    # that, after one rescale, lands on the cubic's scale; then drop the remaining level(s).
    data = ctx.seal_context.get_context_data(x.parms_id())
    dropped = float(data.parms().coeff_modulus()[-1].value())
    pt_scale = cubic.scale * dropped / x.scale
    linear = ctx.rescale(_multiply_plain_at(ctx, x, c1, pt_scale))
    if linear.parms_id() != cubic.parms_id():
        linear = _mod_switch_to(ctx, linear, cubic.parms_id())
    linear.scale = cubic.scale
    total = ctx.add(cubic, linear)
    return ctx.add_plain(total, c0)


def _multiply_plain_at(ctx: CkksPublicContext, ct: Any, value: float, scale: float) -> Any:
    import tenseal.sealapi as seal

    pt = ctx.encode(value, scale=scale, parms_id=ct.parms_id())
    out = seal.Ciphertext()
    ctx.evaluator.multiply_plain(ct, pt, out)
    return out
