"""Encrypted propensity scoring: a linear model evaluated by the compute centre on CKKS data.

Message sequence (``protocol = "scoring"``, version 1; ``round`` is 0 for the set-up and
``b + 1`` for block ``b``)::

    owner  -> centre  ScoringSetup        public context, n_customers, n_features, the model
                                          (plaintext weights + bias, or one ciphertext per
                                          weight + an encrypted bias), optional sigmoid
                                          polynomial
    centre -> owner   ScoringReady        number of blocks the centre expects
    for each block b of ≤ slot_count customers:
      owner  -> centre  EncryptedFeatures   one ciphertext per feature column of block b
                                            (column packing: slot i = customer i of the block)
      centre -> owner   EncryptedScores     Σ_j w_j·x_j + bias for every slot (one level);
                                            with the sigmoid option also p(score), a degree-3
                                            odd polynomial (three levels)
    the owner decrypts the scores of its own customers; it releases a segment (customer ids),
    and the merchant learns only the segment's size.

Leakage (ARCHITECTURE §1 terms):

* **Compute centre** — the sizes (customers, features, blocks), the sigmoid polynomial's
  coefficients, and, in the default *plaintext-model* mode, the model itself (weights and
  bias: what a merchant would call its propensity model). With ``encrypted model`` the
  weights and bias arrive as ciphertexts and the centre learns only their number. It never
  sees a feature, a score or a probability: everything it holds is a CKKS ciphertext under the
  owner's key (IND-CPA, 128-bit HE-standard parameters).
* **Data owner** — the scores (and approximate probabilities) of its own customers, and the
  model, which it encrypted or trained itself. It must not hand decrypted scores back to the
  centre: CKKS decryptions leak noise that, shown to the evaluator, can reveal the secret key
  (Li & Micciancio, EUROCRYPT 2021). Segments are released as customer ids, not scores.
* **Merchant** — the size of each segment released to it (each ≥ the minimum segment size).

The centre side (:class:`ScoringCentre`) takes only public-context bytes and refuses a context
that can decrypt; the owner side (:class:`ScoringOwner`) works through any key holder that
offers ``public_bytes``, ``encrypt_to_bytes`` and ``decrypt_bytes``
(:class:`cipherseg.schemes.ckks_keys.CkksSecretContext`), which this module does not import.

>>> import numpy as np
>>> from cipherseg.schemes.ckks import CkksParams
>>> from cipherseg.schemes.ckks_keys import CkksSecretContext
>>> keys = CkksSecretContext.generate(CkksParams.for_depth(1))
>>> owner = ScoringOwner(keys, weights=[0.5, -2.0], bias=0.5)
>>> centre = ScoringCentre()
>>> result = owner.run(np.array([[1.0, 0.0], [2.0, 1.0]]), centre.handle_message)
>>> [round(float(s), 4) for s in result.scores]
[1.0, -0.5]
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from cipherseg.encoding import FixedPointEncoder
from cipherseg.errors import (
    EncodingError,
    ParameterError,
    ProtocolError,
    ValidationError,
)
from cipherseg.protocols.messages import Message, register_message
from cipherseg.schemes.ckks import CkksParams, CkksPublicContext

PROTOCOL = "scoring"
PROTOCOL_VERSION = 1
SIGMOID_DEPTH = 2
"""Levels the degree-3 sigmoid polynomial needs on top of the score's one level."""


# --- messages --------------------------------------------------------------------------------

@register_message
@dataclass(frozen=True, slots=True)
class ScoringSetup(Message):
    """Owner → centre: context, sizes and the model (plaintext or encrypted)."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    public_context: bytes = b""
    n_customers: int = 0
    n_features: int = 0
    weights: tuple[float, ...] = ()
    bias: float = 0.0
    encrypted_weights: tuple[bytes, ...] = ()
    encrypted_bias: bytes = b""
    sigmoid_coefficients: tuple[float, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class ScoringReady(Message):
    """Centre → owner: set-up accepted; ``n_blocks`` blocks of features expected."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    n_blocks: int = 0


@register_message
@dataclass(frozen=True, slots=True)
class EncryptedFeatures(Message):
    """Owner → centre: one ciphertext per feature for the customers of one block."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    block: int = 0
    n_rows: int = 0
    columns: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class EncryptedScores(Message):
    """Centre → owner: encrypted scores (and optional approximate probabilities) of a block."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    block: int = 0
    n_rows: int = 0
    scores: bytes = b""
    probabilities: bytes = b""


# --- sigmoid approximation --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SigmoidApproximation:
    """σ(x) ≈ 0.5 + c1·x + c3·x³, least squares on [-bound, bound].

    The error is documented by :attr:`max_error` (worst case on the interval, on a fine grid);
    outside the interval the cubic diverges, so scores beyond ±bound get meaningless
    probabilities (check :meth:`coverage` on your scores before relying on them).

    Examples
    --------
    >>> approx = SigmoidApproximation.fit(6.0)
    >>> round(approx.max_error, 3)
    0.082
    >>> float(np.round(approx(np.array([0.0]))[0], 6))
    0.5
    """

    bound: float
    c1: float
    c3: float
    max_error: float

    @classmethod
    def fit(cls, bound: float = 6.0) -> SigmoidApproximation:
        if not np.isfinite(bound) or bound <= 0:
            raise ParameterError(f"sigmoid bound must be a positive number, got {bound}")
        x = np.linspace(-bound, bound, 20001)
        target = 1.0 / (1.0 + np.exp(-x)) - 0.5
        basis = np.stack([x, x**3], axis=1)
        (c1, c3), *_ = np.linalg.lstsq(basis, target, rcond=None)
        err = float(np.max(np.abs(basis @ np.array([c1, c3]) - target)))
        return cls(float(bound), float(c1), float(c3), err)

    @property
    def coefficients(self) -> tuple[float, float, float, float]:
        """(c0, c1, c2, c3) of the polynomial."""
        return (0.5, self.c1, 0.0, self.c3)

    def __call__(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        v = np.asarray(x, dtype=np.float64)
        out: npt.NDArray[np.float64] = 0.5 + self.c1 * v + self.c3 * v**3
        return out

    def coverage(self, scores: npt.ArrayLike) -> float:
        """Fraction of ``scores`` inside [-bound, bound], where :attr:`max_error` holds."""
        s = np.asarray(scores, dtype=np.float64)
        return float(np.mean(np.abs(s) <= self.bound)) if s.size else 1.0


# --- the compute centre ------------------------------------------------------------------------

class ScoringCentre:
    """The compute centre's side: holds the public context and the model it was sent.

    Feed it protocol messages as bytes (:meth:`handle`) or objects (:meth:`handle_message`).
    A set-up carrying a secret key is refused with
    :class:`~cipherseg.errors.KeyCustodyError`.

    Examples
    --------
    >>> ScoringCentre().handle_message(
    ...     EncryptedFeatures(protocol_version=1, session_id="s", round=1))
    Traceback (most recent call last):
    ...
    cipherseg.errors.ProtocolError: scoring: features arrived before ScoringSetup; send the \
set-up first
    """

    def __init__(self) -> None:
        self._ctx: CkksPublicContext | None = None
        self._setup: ScoringSetup | None = None
        self._weights: list[tuple[int, Any]] = []
        self._enc_weights: list[Any] = []
        self._enc_bias: Any = None
        self._n_blocks = 0
        self._done: set[int] = set()
        self.compute_seconds = 0.0

    def handle(self, data: bytes) -> bytes:
        """Bytes in, bytes out (the transport's handler)."""
        return self.handle_message(Message.from_bytes(data)).to_bytes()

    def handle_message(self, message: Message) -> Message:
        if isinstance(message, ScoringSetup):
            return self._on_setup(message)
        if isinstance(message, EncryptedFeatures):
            return self._on_features(message)
        raise ProtocolError(
            f"scoring: the centre does not accept {type(message).__name__} messages"
        )

    # ------------------------------------------------------------------------------------
    def _on_setup(self, m: ScoringSetup) -> ScoringReady:
        _check_version(m)
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
        _check_version(m)
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
                _cubic(ctx, score, setup.sigmoid_coefficients)
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


def _check_version(m: Message) -> None:
    if m.protocol_version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"scoring protocol version {m.protocol_version} is not supported "
            f"(this centre speaks {PROTOCOL_VERSION})"
        )


def _mod_switch_to(ctx: CkksPublicContext, ct: Any, parms_id: Any) -> Any:
    import tenseal.sealapi as seal

    out = seal.Ciphertext()
    ctx.evaluator.mod_switch_to(ct, parms_id, out)
    return out


def _cubic(ctx: CkksPublicContext, x: Any, coeffs: Sequence[float]) -> Any:
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


# --- the data owner ----------------------------------------------------------------------------

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


Channel = Callable[[Message], Message]


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

    def run(self, features: npt.ArrayLike, channel: Channel,
            progress: Callable[[int, int], None] | None = None) -> ScoringResult:
        """Score every row of ``features`` through ``channel`` (message in, reply out)."""
        x = self.encode(features)
        n = x.shape[0]
        slots = self.keys.params.slot_count
        sent = received = 0
        enc_s = dec_s = 0.0
        t0 = time.perf_counter()
        setup = self.setup_message(n)
        enc_s += time.perf_counter() - t0
        ready = channel(setup)
        sent += len(setup.to_bytes())
        received += len(ready.to_bytes())
        if not isinstance(ready, ScoringReady) or ready.session_id != self.session_id:
            raise ProtocolError("scoring: the centre did not acknowledge the set-up")
        n_blocks = -(-n // slots)
        if ready.n_blocks != n_blocks:
            raise ProtocolError(
                f"scoring: centre expects {ready.n_blocks} blocks, owner has {n_blocks}"
            )
        scores = np.empty(n)
        probs = np.empty(n) if self.sigmoid else None
        centre_before = time.perf_counter()
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
            reply = channel(msg)
            centre_s += time.perf_counter() - centre_before
            sent += len(msg.to_bytes())
            received += len(reply.to_bytes())
            if (not isinstance(reply, EncryptedScores) or reply.block != b
                    or reply.n_rows != rows.shape[0]):
                raise ProtocolError(f"scoring: unexpected reply for block {b}")
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
        return ScoringResult(scores, probs, n_blocks, sent, received, enc_s, centre_s, dec_s)


def sigmoid_params() -> CkksParams:
    """Depth-3 CKKS parameters for scoring with the sigmoid (N=8192, log q = 215 ≤ 218).

    Examples
    --------
    >>> sigmoid_params().depth
    3
    """
    return CkksParams(8192, (55, 35, 35, 35, 55), 35)
