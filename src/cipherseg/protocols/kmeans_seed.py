"""Protocol 4.4 — seed-mode k-means: the original system's design on VHE. **Leaks; broken.**

The data owner encrypts its customers' fixed-point integer features with Zhou–Wornell VHE
(:mod:`cipherseg.schemes.vhe`); the compute centre clusters them using only additions and
linear transformations, holding the **centroids in plaintext**. For reproduction and
comparison only (ARCHITECTURE §4.4): use protocol 4.1 (``scheme="ckks"``) for real data.

Message sequence (owner = client, centre = server; versioned
:class:`~cipherseg.protocols.messages.Message` objects, ``PROTOCOL = "kmeans-seed"``)::

    SeedUpload(VHE params, Enc(x_i) for all customers,
               d linear-transformation keys G_f = e_f^T, S → S1)    → SeedUploadAck
        # the centre switches every Enc(x_i) to per-feature Enc(x_if) under S1, once
    SeedCentroids(plaintext centroids μ̃ = round(2^p·μ))            → SeedScores(Enc(μ̃_j^(t)·x_i))
        # μ̃ split into signed base-2^b digits μ̃^(t); Σ_f μ̃_jf^(t)·Enc(x_if): integer
        # combinations (additions) of the per-feature ciphertexts, one per digit and cluster
    SeedLabels(every customer's cluster)                            → SeedSums(Enc(Σ_{i∈j} x_i),
                                                                               cluster sizes)
    … repeated each Lloyd iteration …
    SeedClose                                                       → SeedCloseAck

The owner decrypts the digit scores, recombines ``μ̃_j·x_i = Σ_t 2^(b·t)·μ̃_j^(t)·x_i``
exactly, assigns each customer to ``argmin_j ‖μ̃_j‖² − 2^(p+1)·μ̃_j·x_i`` (the squared
distance up to the customer's own ``‖x_i‖²``, centroids on the grid ``2^-p`` of a plaintext
unit, p = 20 by default), decrypts the per-cluster sums and divides by the sizes, exactly as
scikit-learn's Lloyd iteration does (same loop, same convergence test, same relocation of
empty clusters). Labels therefore agree with :class:`sklearn.cluster.KMeans` from the same
initial centres except for points within ~2^-21 plaintext units of a boundary. The digit
split keeps the combination weights below ``2^b ≈ n/d``, so the VHE parameters are those the
cluster sums need anyway (64-bit arithmetic for 100 000 customers of 12-bit features).

Leakage (ARCHITECTURE §1 terms) — **more than the table allows, by design of the original**:

* **Compute centre** learns every centroid of every iteration in plaintext (it holds them),
  the cluster of every customer (it needs the labels to add the right ciphertexts), hence
  the cluster sizes, the number of customers, features and iterations. Besides that, the
  scheme itself is broken: from the per-feature linear-transformation keys it receives, the
  centre recovers the owner's secret key with :func:`cipherseg.schemes.vhe_attack.
  recover_key_from_linear_transform_keys` and decrypts **every customer's features** — so in
  truth the centre learns everything. ``tests/security/test_vhe_attack.py`` does this.
* **Data owner** learns ``μ̃_j·x_i`` for each customer and cluster (functions of its own data)
  and everything it sent.
* **Merchant / others**: whatever the centre releases — and the centre holds the centroids.
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import KeyCustodyError, ParameterError, ProtocolError, ValidationError
from cipherseg.progress import Progress
from cipherseg.protocols.lloyd import update_centres
from cipherseg.protocols.messages import Message, register_message
from cipherseg.schemes.vhe import (
    VHE_INSECURE_WARNING,
    KeySwitchKey,
    VHECiphertexts,
    VHEContext,
    VHEParams,
    stack,
)
from cipherseg.schemes.vhe_keys import VHESecretKey, default_rng
from cipherseg.transport.inprocess import InProcessTransport

PROTOCOL = "kmeans-seed"
VERSION = 1
DEFAULT_CENTROID_BITS = 20

LEAKAGE_SEED = {
    "compute_centre": "EVERYTHING: the plaintext centroids of every iteration and every "
                      "customer's cluster by design, and - because VHE's linear-transformation "
                      "keys reveal the secret key - every customer's features",
    "data_owner": "mu_j . x_i for every customer and cluster (functions of its own data)",
    "warning": VHE_INSECURE_WARNING,
}


# ----------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------
@register_message
@dataclass(frozen=True, slots=True)
class SeedUpload(Message):
    PROTOCOL = PROTOCOL
    params_json: str = ""
    n_clusters: int = 0
    ciphertexts: bytes = b""  # (n, d + m) under S
    feature_keys: tuple[bytes, ...] = ()  # d linear-transformation keys e_f^T: S → S1


@register_message
@dataclass(frozen=True, slots=True)
class SeedUploadAck(Message):
    PROTOCOL = PROTOCOL
    n_samples: int = 0


@register_message
@dataclass(frozen=True, slots=True)
class SeedCentroids(Message):
    PROTOCOL = PROTOCOL
    centroid_bits: int = 0
    digit_bits: int = 0
    centroids: tuple[int, ...] = ()  # k × d, row-major, units of 2^-p plaintext units


@register_message
@dataclass(frozen=True, slots=True)
class SeedScores(Message):
    PROTOCOL = PROTOCOL
    n_digits: int = 0
    scores: bytes = b""  # (n, n_digits · k, 1 + m) under S1: Enc(μ̃_j^(t) · x_i), digit-major


@register_message
@dataclass(frozen=True, slots=True)
class SeedLabels(Message):
    PROTOCOL = PROTOCOL
    labels: bytes = b""  # n little-endian int32


@register_message
@dataclass(frozen=True, slots=True)
class SeedSums(Message):
    PROTOCOL = PROTOCOL
    sums: bytes = b""  # (k, d + m) under S
    counts: tuple[int, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class SeedClose(Message):
    PROTOCOL = PROTOCOL


@register_message
@dataclass(frozen=True, slots=True)
class SeedCloseAck(Message):
    PROTOCOL = PROTOCOL


# ----------------------------------------------------------------------------------------------
# The compute centre (public material only)
# ----------------------------------------------------------------------------------------------
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

    def __init__(self) -> None:
        self._sessions: dict[str, _CentreSession] = {}
        self.seconds: dict[str, float] = defaultdict(float)

    def holds_secret_key(self) -> bool:
        return any(isinstance(v, VHESecretKey) for s in self._sessions.values()
                   for v in vars(s).values())

    def centroid_history(self, session_id: str) -> list[list[list[int]]]:
        """The plaintext centroids the centre saw in ``session_id`` (the leak, made visible)."""
        return self._sessions[session_id].history

    def handle_bytes(self, data: bytes) -> bytes:
        return self.handle(Message.from_bytes(data)).to_bytes()

    def handle(self, msg: Message) -> Message:
        if isinstance(msg, VHESecretKey):  # pragma: no cover - defensive
            raise KeyCustodyError("the compute centre must never receive a secret key")
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


# ----------------------------------------------------------------------------------------------
# The data owner
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SeedKMeansResult:
    """Outcome of :func:`run_seed_kmeans` (centres and inertia in plaintext integer units)."""

    labels: npt.NDArray[np.int64]
    centers: npt.NDArray[np.float64]
    init_centers: npt.NDArray[np.float64]
    n_iter: int
    inertia: float
    report: dict[str, Any]


def digit_bits_for(n_samples: int, n_features: int) -> int:
    """Digit size b of the centroid split: weights ``d·(2^b − 1)`` stay within ``n`` (b ≥ 8).

    >>> digit_bits_for(100_000, 3)
    15
    """
    return max(8, (max(n_samples, 1) // max(n_features, 1)).bit_length() - 1)


def split_digits(mu: npt.NDArray[Any], bits: int) -> npt.NDArray[np.int64]:
    """Signed base-``2^bits`` digits of integers: ``mu = Σ_t 2^(bits·t)·out[t]``, |out| < 2^bits.

    >>> split_digits(np.array([[300, -5]]), 8).tolist()
    [[[44, -5]], [[1, 0]]]
    """
    flat = [int(v) for v in np.asarray(mu).reshape(-1)]
    top = max((abs(v).bit_length() for v in flat), default=0)
    n_digits = max(1, -(-top // bits))
    mask = (1 << bits) - 1
    out = np.array([[(1 if v >= 0 else -1) * ((abs(v) >> (bits * t)) & mask) for v in flat]
                    for t in range(n_digits)], dtype=np.int64)
    return out.reshape(n_digits, *np.asarray(mu).shape)


def seed_params(n_samples: int, n_features: int, max_abs: int, *, noise_bound: int = 1,
                secret_dim: int = 1, min_ciphertext_bits: int = 16) -> VHEParams:
    """The smallest VHE parameters the seed mode needs for this data.

    Budget: sums of up to ``n_samples`` fresh ciphertexts, and per-digit score combinations
    with weights ``Σ_f |μ̃_jf^(t)| ≤ d·(2^b − 1)`` of once-switched per-feature ciphertexts
    (``b = digit_bits_for(n, d)``).

    >>> p = seed_params(100_000, 3, 2047)
    >>> p.backend, p.ciphertext_bits
    ('uint64', 55)
    """
    coeff = n_features * ((1 << digit_bits_for(n_samples, n_features)) - 1)
    return VHEParams.for_workload(
        n_features, max(2, max_abs.bit_length() + 1), max_terms=max(n_samples, coeff),
        key_switches=1, noise_bound=noise_bound, secret_dim=secret_dim,
        min_ciphertext_bits=min_ciphertext_bits,
    )


def _check_params(params: VHEParams, n: int, d: int, max_abs: int) -> None:
    need = seed_params(n, d, max_abs)
    if params.dim != d:
        raise ParameterError(f"params.dim={params.dim} but the data have {d} features")
    if params.max_plaintext < max_abs:
        raise ParameterError(f"the data need plaintext_bits >= {need.plaintext_bits}")
    if params.max_terms < need.max_terms or params.key_switches < 1:
        raise ParameterError(
            f"the seed mode needs max_terms >= {need.max_terms} (sums of {n} customers and "
            f"centroid digit weights) and key_switches >= 1; "
            "use cipherseg.protocols.kmeans_seed.seed_params(...)"
        )


class SeedDataOwner:
    """Client side of the seed mode: holds the VHE keys and the plaintext data."""

    def __init__(self, params: VHEParams, *, centroid_bits: int = DEFAULT_CENTROID_BITS,
                 rng: np.random.Generator | int | None = None) -> None:
        self.params = params
        self.centroid_bits = centroid_bits
        self._rng = default_rng(rng)

    def run(self, x: npt.NDArray[np.int64], init_centers: npt.NDArray[np.float64],
            transport: InProcessTransport, *, max_iter: int, tol: float,
            progress: Progress | None = None) -> SeedKMeansResult:
        notify = progress or (lambda stage, done, total: None)
        n, d = x.shape
        k = init_centers.shape[0]
        p = self.centroid_bits
        b = digit_bits_for(n, d)
        seconds: dict[str, float] = defaultdict(float)
        session = uuid.uuid4().hex
        rnd = 0

        def send(msg_cls: type[Message], **fields: Any) -> Any:
            nonlocal rnd
            rnd += 1
            return transport.exchange(msg_cls(protocol_version=VERSION, session_id=session,
                                             round=rnd, **fields))

        t = time.perf_counter()
        key = VHESecretKey.generate(self.params, rng=self._rng)
        out_key = VHESecretKey.generate(self.params, plain_dim=1, rng=self._rng)
        eye = np.eye(d, dtype=np.int64)
        feature_keys = [key.linear_transform_key(eye[f:f + 1], out_key) for f in range(d)]
        ctx = key.ctx
        seconds["keygen"] += time.perf_counter() - t
        notify("encrypt", 0, n)
        t = time.perf_counter()
        enc = key.encrypt(x)
        seconds["encrypt"] += time.perf_counter() - t
        notify("encrypt", n, n)
        t = time.perf_counter()
        upload = dict(params_json=self.params.to_json(), n_clusters=k,
                      ciphertexts=ctx.ciphertexts_to_bytes(enc),
                      feature_keys=tuple(ctx.key_to_bytes(fk) for fk in feature_keys))
        seconds["serialise"] += time.perf_counter() - t
        t = time.perf_counter()
        send(SeedUpload, **upload)
        seconds["centre_transform"] += time.perf_counter() - t

        x_obj = x.astype(np.float64)

        def assign(centers: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
            mu = _round_centroids(centers, p)
            t0 = time.perf_counter()
            reply = send(SeedCentroids, centroid_bits=p, digit_bits=b,
                         centroids=tuple(int(v) for v in mu.reshape(-1)))
            seconds["centre_scores"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            digit_scores = out_key.decrypt(ctx.ciphertexts_from_bytes(reply.scores))[..., 0]
            seconds["decrypt"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            dots = _recombine(digit_scores.reshape(n, reply.n_digits, k), b)
            labels = _argmin_scores(mu, dots, p)
            seconds["assign"] += time.perf_counter() - t0
            return labels

        centers = np.asarray(init_centers, dtype=np.float64).copy()
        labels_old = np.full(n, -1, dtype=np.int64)
        labels = labels_old
        strict = False
        it = -1
        for it in range(max_iter):
            notify("iterate", it, max_iter)
            labels = assign(centers)
            t0 = time.perf_counter()
            reply = send(SeedLabels, labels=labels.astype("<i4").tobytes())
            seconds["centre_sums"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            sums = key.decrypt(ctx.ciphertexts_from_bytes(reply.sums))  # (k, d) exact
            seconds["decrypt"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            new_centers = update_centres(x_obj, labels, centers, sums,
                                         np.array(reply.counts, dtype=np.int64))
            seconds["update"] += time.perf_counter() - t0
            shift = float(((new_centers - centers) ** 2).sum())
            centers = new_centers
            if np.array_equal(labels, labels_old):
                strict = True
                break
            if shift <= tol:
                break
            labels_old = labels
        if not strict:
            labels = assign(centers)
        notify("iterate", max_iter, max_iter)
        send(SeedClose)
        diff = x_obj - centers[labels]
        inertia = float(np.einsum("ij,ij->", diff, diff))
        report = {
            "scheme": "vhe",
            "protocol": "4.4 seed mode (original system; insecure)",
            "vhe": self.params.describe(),
            "centroid_bits": p,
            "digit_bits": b,
            "seconds": {"owner": {k_: v for k_, v in seconds.items()
                                  if not k_.startswith("centre_")},
                        "centre": {k_[7:]: v for k_, v in seconds.items()
                                   if k_.startswith("centre_")}},
            "bytes_to_centre": transport.stats.bytes_to_server,
            "bytes_to_owner": transport.stats.bytes_to_client,
            "leakage": LEAKAGE_SEED,
        }
        return SeedKMeansResult(labels=labels, centers=centers,
                                init_centers=np.asarray(init_centers, dtype=np.float64),
                                n_iter=it + 1, inertia=inertia, report=report)


def _round_centroids(centers: npt.NDArray[np.float64], p: int) -> npt.NDArray[Any]:
    scaled = np.rint(centers * float(2**p))
    if np.max(np.abs(scaled)) < 2.0**62:
        return scaled.astype(np.int64)
    return np.array([[int(v) for v in row] for row in scaled], dtype=object)


def _recombine(digit_scores: npt.NDArray[Any], bits: int) -> npt.NDArray[Any]:
    """``Σ_t 2^(bits·t)·s[:, t, :]`` exactly (int64 when it fits, else Python ints)."""
    n_digits = digit_scores.shape[1]
    if digit_scores.dtype != object:
        peak = int(np.max(np.abs(digit_scores))) if digit_scores.size else 0
        if peak.bit_length() + bits * (n_digits - 1) + n_digits.bit_length() < 62:
            weights = np.array([1 << (bits * t) for t in range(n_digits)], dtype=np.int64)
            combined: npt.NDArray[Any] = np.einsum("ntk,t->nk", digit_scores.astype(np.int64),
                                                   weights)
            return combined
    out = np.zeros((digit_scores.shape[0], digit_scores.shape[2]), dtype=object)
    for t in range(n_digits):
        out = out + digit_scores[:, t, :].astype(object) * (1 << (bits * t))
    return out


def _argmin_scores(mu: npt.NDArray[Any], dots: npt.NDArray[Any], p: int
                   ) -> npt.NDArray[np.int64]:
    """argmin_j ‖μ̃_j‖² − 2^(p+1)·(μ̃_j·x_i), exactly.

    In int64 when the values fit; otherwise in float64 with every row whose two best
    candidates are closer than the float64 error bound re-decided with Python integers.
    """
    norms = [sum(int(v) * int(v) for v in row) for row in mu]
    if dots.dtype != object:
        peak = int(np.max(np.abs(dots))) if dots.size else 0
    else:
        peak = max((abs(int(v)) for v in dots.reshape(-1)), default=0)
    biggest = max(norms) + (2 << p) * peak
    if biggest < 2**62 and dots.dtype != object:
        dist = np.array(norms, dtype=np.int64)[None, :] - (2 << p) * dots.astype(np.int64)
        return np.asarray(np.argmin(dist, axis=1), dtype=np.int64)
    dist_f = (np.array([float(v) for v in norms])[None, :]
              - float(2 << p) * np.asarray(dots, dtype=np.float64))
    labels = np.asarray(np.argmin(dist_f, axis=1), dtype=np.int64)
    if dist_f.shape[1] > 1:
        part = np.partition(dist_f, 1, axis=1)
        unsure = np.where(part[:, 1] - part[:, 0] <= 8.0 * 2.0**-52 * float(biggest))[0]
        for i in unsure:
            exact = [norms[j] - (2 << p) * int(dots[i, j]) for j in range(dist_f.shape[1])]
            labels[i] = int(np.argmin(np.array(exact, dtype=object)))
    return labels


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------
def run_seed_kmeans(x_int: npt.ArrayLike, init_centers: npt.ArrayLike, *, max_iter: int = 300,
                    tol: float = 1e-4, params: VHEParams | None = None,
                    centroid_bits: int = DEFAULT_CENTROID_BITS,
                    rng: np.random.Generator | int | None = None,
                    absolute_tol: bool = False,
                    progress: Progress | None = None) -> SeedKMeansResult:
    """Seed-mode k-means of fixed-point integer features ``x_int`` from ``init_centers``.

    **Insecure** (see the module docstring): the centre sees centroids and labels, and can
    recover the VHE key. ``tol`` is scikit-learn's relative tolerance (times the mean feature
    variance) unless ``absolute_tol``; ``init_centers`` are in the same integer units as
    ``x_int`` (need not be integers). ``params`` default to :func:`seed_params` for the data.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0, 10], [10, 0], [500, 510], [510, 500]])
    >>> res = run_seed_kmeans(X, X[[0, 2]].astype(float), rng=0)
    >>> res.labels.tolist(), res.centers.tolist()
    ([0, 0, 1, 1], [[5.0, 5.0], [505.0, 505.0]])
    """
    x = np.asarray(x_int)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValidationError(f"x_int must be a non-empty 2-D integer array, got {x.shape}")
    if x.dtype.kind not in "iu" and (
            x.dtype.kind != "f" or not np.all(np.isfinite(x)) or np.any(x != np.rint(x))):
        raise ValidationError("x_int must hold integers: encode the features first "
                              "(cipherseg.encoding.FixedPointEncoder)")
    x = x.astype(np.int64)
    init = np.asarray(init_centers, dtype=np.float64)
    n, d = x.shape
    if init.ndim != 2 or init.shape[1] != d or not 1 <= init.shape[0] <= n:
        raise ParameterError(
            f"init_centers must have shape (k, {d}) with 1 <= k <= {n}, got {init.shape}"
        )
    if not np.all(np.isfinite(init)):
        raise ParameterError("init_centers must be finite")
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ParameterError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if not 0 <= centroid_bits <= 40:
        raise ParameterError(f"centroid_bits must be in [0, 40], got {centroid_bits}")
    max_abs = int(max(np.max(np.abs(x)), math.ceil(float(np.max(np.abs(init))))))
    if params is None:
        params = seed_params(n, d, max_abs)
    else:
        _check_params(params, n, d, max_abs)
    abs_tol = float(tol) if absolute_tol else float(np.mean(np.var(x.astype(np.float64), axis=0))
                                                   ) * float(tol)
    centre = SeedComputeCentre()
    transport = InProcessTransport(centre.handle_bytes)
    owner = SeedDataOwner(params, centroid_bits=centroid_bits, rng=rng)
    started = time.perf_counter()
    result = owner.run(x, init, transport, max_iter=max_iter, tol=abs_tol, progress=progress)
    result.report["seconds_total"] = time.perf_counter() - started
    result.report["seconds"]["centre_internal"] = dict(centre.seconds)
    return result


ESTIMATOR_MAX_FRACTION_BITS = 24


def _exact_grid_scale(xn: npt.NDArray[np.float64], decimals: int) -> float | None:
    """The scale ``10^decimals · 2^j`` (smallest j) that maps ``xn`` onto integers, if any."""
    base = float(10**decimals)
    for j in range(-64, 65):
        scaled = xn * base * 2.0**j
        if np.max(np.abs(scaled), initial=0.0) >= 2.0**62:
            return None
        ints = np.rint(scaled)
        if np.all(np.abs(ints - scaled) <= 1e-6) and not np.any((ints == 0) & (xn != 0)):
            return base * 2.0**j
    return None


def run_seed_kmeans_for_estimator(xn: npt.NDArray[np.float64], n_clusters: int, *,
                                  init: npt.NDArray[np.float64] | None, max_iter: int,
                                  tol: float, random_state: int | None,
                                  decimals: int | None) -> dict[str, Any]:
    """``EncryptedKMeans(scheme="vhe")``: seed mode on normalised features (|x| ≤ 1).

    Encoding: with ``decimals`` the features' own decimal grid (found exactly, whatever the
    normalisation); without, the finest power-of-two grid ``2^-f`` (f ≤ 24) whose parameters
    still fit 64-bit arithmetic. ``init=None``: scikit-learn's k-means++ run by the owner on
    its own plaintext data. ``tol`` is absolute, in the units of ``xn``.

    >>> import numpy as np
    >>> X = np.array([[0.0, 0.1], [0.1, 0.0], [0.9, 1.0], [1.0, 0.9]])
    >>> out = run_seed_kmeans_for_estimator(X, 2, init=X[[0, 2]], max_iter=10, tol=0.0,
    ...                                     random_state=0, decimals=None)
    >>> out["labels"].tolist()
    [0, 0, 1, 1]
    """
    from sklearn.cluster import kmeans_plusplus

    xn = np.asarray(xn, dtype=np.float64)
    n, d = xn.shape
    scale: float | None = None
    fraction_bits: int | None = None
    if decimals is not None:
        scale = _exact_grid_scale(xn, int(decimals))
    if scale is None:
        peak = max(float(np.max(np.abs(xn), initial=0.0)), 1e-300)
        for f in range(ESTIMATOR_MAX_FRACTION_BITS, 3, -1):
            max_abs = math.ceil(peak * 2.0**f)
            if seed_params(n, d, max_abs).ciphertext_bits <= 64:
                break
        fraction_bits = f
        scale = 2.0**f
    x_int = np.rint(xn * scale).astype(np.int64)
    seed = random_state if random_state is not None else secrets.randbits(31)
    rng = np.random.default_rng(seed)
    if init is None:
        init_n, _ = kmeans_plusplus(xn, n_clusters, random_state=int(rng.integers(2**31 - 1)))
    else:
        init_n = np.asarray(init, dtype=np.float64)
    res = run_seed_kmeans(x_int, init_n * scale, max_iter=max_iter, tol=tol * scale**2,
                          absolute_tol=True, rng=rng)
    centers = res.centers / scale
    diff = xn - centers[res.labels]
    report = dict(res.report)
    report["encoding"] = {"scale": scale, "fraction_bits": fraction_bits, "decimals": decimals}
    return {"labels": res.labels, "centers": centers, "init_centers": init_n,
            "inertia": float(np.einsum("ij,ij->", diff, diff)), "n_iter": res.n_iter,
            "report": report}
