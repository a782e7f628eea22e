"""Protocol 4.5 (vertical k-means): the key-holding manager.

It generates the CKKS key set, hands out public keys only, decrypts exactly what the sequence
says — blinded pairwise comparisons (signs), k-means++ picks under a mask, scaled D² in
permuted blocks, per-cluster aggregates — each of the expected count and shape, once, checks
it, and releases the model (and each holder's final labels) at the end only. Leakage:
:mod:`cipherseg.protocols.vertical`.
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.engine.base import Executor, chunk_indices
from cipherseg.engine.local import LocalExecutor
from cipherseg.engine.state import get_state
from cipherseg.errors import CiphertextError, ParameterError, ProtocolError
from cipherseg.protocols.dp import DPConfig, data_independent_centres, gaussian_release
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Outgoing
from cipherseg.protocols.vertical import messages as vm
from cipherseg.protocols.vertical.session import (
    BLIND_MIN_BITS,
    D2_SCALE_BITS,
    MASK_BITS,
    PARAMS,
    blind_max_bits,
    decrypted_shapes,
    packed,
    pairs,
)
from cipherseg.schemes.ckks_keys import CkksSecretContext

#: Absolute slack on checks of values of order 1 (CKKS error here is below 1e-6).
SLACK = 1e-3
MAX_FEATURES = 256
_ROOM = 2.0**29
#: A slot sum holds its total in every slot: the honest spread across slots is CKKS noise,
#: measured at most 2.1e-5 for sums and 3.1e-6 for totals, at 20k and at 100k customers alike
#: (the last rescale's rounding dominates). A column passed off as a sum spreads by its values;
#: one scaled below this bound is drowned to a few bits per value (docs/security.md).
SLOT_SPREAD = 1e-4
#: A masked record is zero outside the picked slot, up to CKKS noise (measured 1.2e-8).
MASKED_ZERO = 1e-4


def labels_from_comparisons(z: npt.NDArray[np.float64], m: int) -> npt.NDArray[np.int64]:
    """Labels from the signs of ``z`` (one row per pair j < l: negative means j is nearer):
    the cluster that wins most comparisons, the lowest index among equals.

    >>> z = np.array([[-1.0, 2.0], [-3.0, 1.0], [-2.0, 5.0]])   # pairs (0,1), (0,2), (1,2)
    >>> labels_from_comparisons(z, 3).tolist()
    [0, 2]
    """
    labels: npt.NDArray[np.int64] = np.argmax(_wins(z, m), axis=0).astype(np.int64)
    return labels


def _wins(z: npt.NDArray[np.float64], m: int) -> npt.NDArray[np.int64]:
    """How many comparisons each of the ``m`` clusters wins, per customer."""
    wins = np.zeros((m, z.shape[1]), dtype=np.int64)
    for p, (j, other) in enumerate(pairs(m)):
        nearer = z[p] < 0
        wins[j] += nearer
        wins[other] += ~nearer
    return wins


@dataclass
class ManagerLog:
    """What the manager learned, iteration by iteration (for audits, docs and tests)."""

    counts: list[npt.NDArray[np.int64]] = field(default_factory=list)
    exact_sums: list[npt.NDArray[np.float64]] = field(default_factory=list)
    noisy_sums: list[npt.NDArray[np.float64]] = field(default_factory=list)
    noisy_counts: list[npt.NDArray[np.float64]] = field(default_factory=list)
    empty_clusters: list[tuple[int, int]] = field(default_factory=list)  # (iteration, cluster)
    decrypted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    intransitive: int = 0  # customers whose comparisons named no cluster nearer than all others


class VerticalManager:
    """The manager of protocol 4.5: ``start()``, then ``handle(sender, message)``.

    Parameters
    ----------
    holder_features:
        Number of columns of each holder, in holder order (public schedule).
    n_clusters:
        k ≥ 2.
    init:
        "k-means++" (secure selection), "given" (public ``init_centres``, input units) or
        "random" (data-independent centres in the DP bounds).
    max_iter, tol:
        Lloyd iterations at most; stop when the squared centre shift (input units) is at most
        ``tol`` (0: until no label changes). With DP every iteration is run.
    dp_epsilon, dp_delta, dp_bounds:
        With ``dp_epsilon``, Gaussian noise on every iteration's sums and counts so that the
        released model is (ε, δ)-DP per customer; ``dp_bounds`` = (lower, upper) per joined
        feature, public, required.
    random_state:
        Seeds the manager's sampling choices (k-means++ picks, random centres) for tests;
        keys, encryption and DP noise always come from the OS CSPRNG.
    executor:
        Where per-block decryption and encryption run (its own processes: the secret key
        is registered there only); default this process.
    """

    name = vm.MANAGER

    def __init__(self, holder_features: Sequence[int], n_clusters: int, *,
                 holder_ids: Sequence[int] | None = None, init: str = "k-means++",
                 init_centres: npt.ArrayLike | None = None, max_iter: int = 300,
                 tol: float = 0.0, dp_epsilon: float | None = None, dp_delta: float = 1e-6,
                 dp_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
                 random_state: int | None = None, session_id: str | None = None,
                 executor: Executor | None = None) -> None:
        self._executor: Executor = executor if executor is not None else LocalExecutor()
        self._key = f"vertical-manager-{secrets.token_hex(8)}"
        self.holder_features = tuple(int(d) for d in holder_features)
        self.holder_ids = tuple(holder_ids) if holder_ids is not None else tuple(
            range(1, len(self.holder_features) + 1))
        if len(self.holder_features) < 2 or len(self.holder_ids) != len(self.holder_features):
            raise ParameterError("vertical k-means needs two or more holders, each with columns")
        if len(set(self.holder_ids)) != len(self.holder_ids) or min(self.holder_ids) < 1:
            raise ParameterError("holder ids must be distinct positive integers")
        if min(self.holder_features) < 1:
            raise ParameterError("every holder must bring at least one column")
        self.d = sum(self.holder_features)
        if self.d > MAX_FEATURES:
            raise ParameterError(f"{self.d} joined features exceed {MAX_FEATURES}: the blinding "
                                 "range would shrink below 4 bits")
        if not isinstance(n_clusters, int) or n_clusters < 2 or n_clusters > 255:
            raise ParameterError(f"n_clusters must be an integer in [2, 255], got {n_clusters!r}")
        if init not in vm.INITS:
            raise ParameterError(f"init must be one of {vm.INITS}, got {init!r}")
        if not isinstance(max_iter, int) or max_iter < 1 or tol < 0:
            raise ParameterError("need max_iter >= 1 and tol >= 0")
        self.k, self.init, self.max_iter, self.tol = n_clusters, init, max_iter, float(tol)
        self._lower = np.zeros(self.d)
        self._upper = np.zeros(self.d)
        self.dp: DPConfig | None = None
        self._dp_input: tuple[float, float] | None = None
        if dp_epsilon is not None:
            if dp_bounds is None:
                raise ParameterError("dp_epsilon needs public dp_bounds=(lower, upper)")
            if init == "k-means++":
                raise ParameterError("k-means++ depends on individual records, which no DP "
                                     "budget covers; use init='random' or public centres")
            lower, upper = (np.asarray(b, dtype=np.float64) for b in dp_bounds)
            if lower.shape != (self.d,) or upper.shape != (self.d,) or not np.all(
                    np.isfinite(lower) & np.isfinite(upper) & (lower < upper)):
                raise ParameterError(f"dp_bounds need finite lower < upper for each of the "
                                     f"{self.d} joined features")
            self._lower, self._upper = lower, upper
            self._dp_input = (float(dp_epsilon), float(dp_delta))
            DPConfig(float(dp_epsilon), float(dp_delta), max_iter, tuple(lower), tuple(upper))
        elif init == "random":
            raise ParameterError("init='random' draws centres in the DP bounds; pass dp_epsilon")
        self._init_centres: npt.NDArray[np.float64] | None = None
        if init == "given":
            if init_centres is None:
                raise ParameterError("init='given' needs init_centres")
            self._init_centres = np.asarray(init_centres, dtype=np.float64).reshape(self.k,
                                                                                    self.d)
            if not np.all(np.isfinite(self._init_centres)):
                raise ParameterError("init_centres must be finite")
        seed = random_state if random_state is not None else secrets.randbits(128)
        self._rng = np.random.default_rng(seed)
        self.session_id = session_id or uuid.uuid4().hex
        self._sk: CkksSecretContext | None = None
        self._shapes: dict[str, tuple[int, float]] = {}
        self._digests: dict[int, bytes] = {}
        self._shared: dict[int, int] = {}
        self._expect: set[str] = set()
        self._round = 0
        self._exponents: dict[int, int] = {}
        self.exponent: int | None = None
        self.n_samples = 0
        self.sizes: list[int] = []
        self._totals: npt.NDArray[np.float64] | None = None
        self._labels: npt.NDArray[np.int64] | None = None
        self._previous: npt.NDArray[np.int64] | None = None
        self.centroids_: npt.NDArray[np.float64] | None = None  # normalised units
        self.init_centres_: npt.NDArray[np.float64] | None = None  # given/random init only
        self.labels_: npt.NDArray[np.int64] | None = None
        self.n_iter_ = 0
        self.n_init_centres = 0
        self.log = ManagerLog()
        self.timings: dict[str, float] = defaultdict(float)
        self.done = False
        self.aborted: str | None = None

    # ------------------------------------------------------------------ start
    @property
    def _middle(self) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = (self._lower + self._upper) / 2.0
        return out

    def _bounds_exponent(self) -> int:
        half = float(np.max((self._upper - self._lower) / 2.0))
        return math.frexp(half)[1]

    def start(self) -> Outgoing:
        """Generate the key set and open the session: Setup to the holders and the centre."""
        t0 = time.perf_counter()
        self._sk = CkksSecretContext.generate(PARAMS)
        self._shapes = decrypted_shapes(self._sk.seal_context)
        sk = self._sk
        self._executor.put_state(self._key, lambda: sk)
        eps, delta = self._dp_input if self._dp_input is not None else (0.0, 0.0)
        common: dict[str, Any] = dict(
            holder_ids=self.holder_ids, holder_features=self.holder_features,
            n_clusters=self.k, init=self.init, max_iter=self.max_iter, tol=self.tol,
            dp_epsilon=eps, dp_delta=delta,
            dp_lower=tuple(float(v) for v in self._lower) if eps else (),
            dp_upper=tuple(float(v) for v in self._upper) if eps else (),
            psi_session=secrets.token_bytes(16))
        to_holders = vm.new_message(vm.Setup, self.session_id, 0,
                                    public_context=self._sk.public_bytes(with_relin=False),
                                    **common)
        to_centre = vm.new_message(vm.Setup, self.session_id, 0,
                                   public_context=self._sk.public_bytes(with_galois=True),
                                   **common)
        self._expect = {"Aligned", *(f"ScaleReport:{h}" for h in self.holder_ids)}
        self.timings["setup"] += time.perf_counter() - t0
        out: Outgoing = [(vm.CENTRE, to_centre)]
        out += [(vm.holder_name(h), to_holders) for h in self.holder_ids]
        return out

    # ------------------------------------------------------------------ dispatch
    def handle(self, sender: str, message: Message) -> Outgoing:
        if message.session_id != self.session_id:
            raise ProtocolError(f"manager: a message for session {message.session_id!r}")
        if isinstance(message, vm.Abort):
            self.aborted = message.reason or f"{sender} aborted"
            self._expect = set()
            return []
        key = _key(message)
        expected = vm.CENTRE if not isinstance(message, vm.ScaleReport) else \
            vm.holder_name(message.holder_id)
        if sender != expected:
            raise ProtocolError(f"manager: {type(message).__name__} must come from {expected}, "
                                f"not {sender}")
        if key not in self._expect:
            raise ProtocolError(f"manager: unexpected {key} (each reply is decrypted once, in "
                                f"order; expected {sorted(self._expect) or 'nothing'})")
        self._expect.discard(key)
        self._round = max(self._round, message.round)
        start = time.perf_counter()
        handler = {
            vm.Aligned: self._on_aligned, vm.ScaleReport: self._on_scale_report,
            vm.Totals: self._on_totals, vm.MaskedRecord: self._on_masked,
            vm.ShuffledD2: self._on_d2, vm.Comparisons: self._on_comparisons,
            vm.Sums: self._on_sums,
        }.get(type(message))
        if handler is None:
            raise ProtocolError(f"manager: does not accept {type(message).__name__}")
        out: Outgoing = handler(message)  # type: ignore[operator]
        self.timings[vm.stage_of(message)] += time.perf_counter() - start
        return out

    def _send(self, dst: str, cls: type[Message], **fields: Any) -> tuple[str, Message]:
        self._round += 1
        return dst, vm.new_message(cls, self.session_id, self._round, **fields)

    def _key_set(self) -> CkksSecretContext:
        if self._sk is None:
            raise ProtocolError("manager: the session has not started")
        return self._sk

    def _decrypt(self, blob: bytes, what: str, kind: str, size: int | None = None, *,
                 complex_slots: bool = False) -> Any:
        """Decrypt one ciphertext of the centre's, after checking it has the level and scale
        the protocol gives that ``kind`` of value (so a holder's upload or any other ciphertext
        of the session is refused unopened)."""
        sk = self._key_set()
        try:
            ct = sk.ciphertext_from_bytes(blob)
        except CiphertextError as exc:
            raise _refuse(f"{what}: {exc}") from exc
        check_shape(sk, ct, self._shapes[kind], what)
        values = sk.decrypt_complex(ct, size) if complex_slots else sk.decrypt(ct, size)
        if not np.all(np.isfinite(values)):
            raise _refuse(f"{what} are not finite numbers")
        self.log.decrypted[what] += 1
        return values

    def _slot_sum(self, blob: bytes, what: str, kind: str, *, complex_slots: bool = False
                  ) -> complex:
        """The value of a slot-summed ciphertext: every slot must hold it (up to CKKS noise);
        anything else — a column, a block — is not a slot sum and is refused."""
        values = self._decrypt(blob, what, kind, complex_slots=complex_slots)
        mean = values.mean()
        spread = float(np.abs(values - mean).max())
        if spread > SLOT_SPREAD:
            # No value in the text: it reaches every party, the centre included.
            raise _refuse(f"{what}: not a slot sum (its slots differ by more than "
                          f"{SLOT_SPREAD:g}); the manager decrypts aggregates, never a column")
        return complex(mean)

    # ------------------------------------------------------------------ alignment, scale
    def _on_aligned(self, m: vm.Aligned) -> Outgoing:
        if m.n_samples < self.k:
            raise ProtocolError(f"manager: {m.n_samples} shared customers for {self.k} clusters")
        self.n_samples = m.n_samples
        slots = PARAMS.slot_count
        self.sizes = [min(slots, m.n_samples - s) for s in range(0, m.n_samples, slots)]
        return self._maybe_scale()

    def _on_scale_report(self, m: vm.ScaleReport) -> Outgoing:
        if not -1100 <= m.exponent <= 1100:
            raise ProtocolError(f"manager: holder {m.holder_id} reported exponent {m.exponent}")
        self._exponents[m.holder_id] = int(m.exponent)
        self._digests[m.holder_id] = bytes(m.intersection)
        self._shared[m.holder_id] = int(m.n_shared)
        return self._maybe_scale()

    def _maybe_scale(self) -> Outgoing:
        if not self.n_samples or len(self._exponents) < len(self.holder_ids):
            return []
        if set(self._shared.values()) != {self.n_samples}:
            raise ProtocolError(f"manager: the centre announced {self.n_samples} shared "
                                f"customers, the holders were given {sorted(self._shared.values())}"
                                "; nothing was computed")
        if len(set(self._digests.values())) != 1:
            raise ProtocolError("manager: the holders were given different intersections by "
                                "the centre (their digests differ); their rows would not be the "
                                "same customers. Nothing was computed")
        if self.dp is None and self._dp_input is not None:
            e = self._bounds_exponent()
            if any(v != e for v in self._exponents.values()):
                raise ProtocolError("manager: in DP mode every holder scales by the public "
                                    "bounds' exponent")
            half = (self._upper - self._lower) / 2.0 / 2.0**e
            eps, delta = self._dp_input
            self.dp = DPConfig(eps, delta, self.max_iter, tuple(-half), tuple(half))
        else:
            e = max(self._exponents.values())
        self.exponent = e
        self._expect = {"Totals"}
        return [self._send(vm.holder_name(h), vm.Scale, exponent=e) for h in self.holder_ids]

    def _normalise(self, centres: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        assert self.exponent is not None
        out: npt.NDArray[np.float64] = (centres - self._middle) / 2.0**self.exponent
        return out

    def released_centroids(self) -> npt.NDArray[np.float64]:
        """The centroids in input units (what Result carries)."""
        if self.centroids_ is None or self.exponent is None:
            raise ProtocolError("manager: no model yet")
        out: npt.NDArray[np.float64] = self.centroids_ * 2.0**self.exponent + self._middle
        return out

    # ------------------------------------------------------------------ start of clustering
    def _on_totals(self, m: vm.Totals) -> Outgoing:
        if len(m.sums) != self.d:
            raise _refuse(f"totals: {len(m.sums)} ciphertexts for {self.d} features")
        totals = np.array([self._slot_sum(b, "totals", "totals").real for b in m.sums])
        if np.any(np.abs(totals) > self.n_samples + SLACK):
            raise _refuse("totals exceed the number of customers (features are |x| <= 1)")
        self._totals = totals
        if self.init == "k-means++":
            self._expect = {"MaskedRecord:0"}
            return [self._send(vm.CENTRE, vm.InitStart)]
        if self.init == "given":
            assert self._init_centres is not None
            centres = self._normalise(self._init_centres)
            if np.any(np.abs(centres) > 1.0 + SLACK):
                raise ParameterError("init_centres lie outside the range of the data")
        else:
            assert self.dp is not None
            centres = data_independent_centres(self.k, self.dp.lower, self.dp.upper, self._rng)
        self.centroids_ = centres
        self.init_centres_ = centres.copy()
        return [self._centroids("lloyd", 0)]

    def _centroids(self, stage: str, index: int) -> tuple[str, Message]:
        assert self.centroids_ is not None
        sk = self._key_set()
        cts = tuple(sk.encrypt_to_bytes(float(v), level=1) for v in self.centroids_.ravel())
        self._expect = {f"Comparisons:{stage}:{index}"}
        return self._send(vm.CENTRE, vm.Centroids, stage=stage, index=index, centroids=cts)

    # ------------------------------------------------------------------ k-means++
    def _on_masked(self, m: vm.MaskedRecord) -> Outgoing:
        if len(m.masked) != self.d or not 0 <= m.slot < PARAMS.slot_count:
            raise _refuse(f"masked record: {len(m.masked)} ciphertexts, slot {m.slot}")
        values = np.array([self._picked(b, m.slot) for b in m.masked])
        if np.any(np.abs(values) > 2.0**MASK_BITS + 1.0 + SLACK):
            raise _refuse("masked record values exceed the mask's range")
        sk = self._key_set()
        centre = tuple(sk.encrypt_to_bytes(float(v)) for v in values)
        self.n_init_centres = m.step + 1
        chosen = m.step + 1
        if chosen == self.k:
            self._expect = {"Comparisons:lloyd:0"}
        elif chosen == 1:
            self._expect = {"ShuffledD2:1"}
        else:
            self._expect = {f"Comparisons:init:{chosen}"}
        return [self._send(vm.CENTRE, vm.NewCentre, step=m.step, centre=centre)]

    def _picked(self, blob: bytes, slot: int) -> float:
        """The masked value in ``slot``; every other slot must be zero (the centre selected the
        record), so the manager never holds a block of values, masked or not."""
        values = self._decrypt(blob, "masked record", "masked record")
        others = np.delete(values, slot)
        if np.abs(others).max() > MASKED_ZERO:
            raise _refuse("masked record: values outside the picked slot; the centre must send "
                          "the picked record only")
        return float(values[slot])

    def _on_d2(self, m: vm.ShuffledD2) -> Outgoing:
        if len(m.d2) != len(self.sizes) or sorted(m.block_sizes) != sorted(self.sizes):
            raise _refuse(f"D²: {len(m.d2)} blocks of sizes that are not the session's")
        kind = "D² first" if m.step == 1 else "D²"
        weights = np.concatenate([self._decrypt(b, "D²", kind, size)
                                  for b, size in zip(m.d2, m.block_sizes, strict=True)])
        limit = 2.0**D2_SCALE_BITS * (4 * self.d + 1)
        if weights.min() < -SLACK * 2.0**D2_SCALE_BITS or weights.max() > limit:
            raise _refuse(f"D² values lie outside [0, {limit:g}]")
        weights = np.clip(weights, 0.0, None)
        total = float(weights.sum())
        self._expect = {f"MaskedRecord:{m.step}"}
        if total <= 0:
            return [self._send(vm.CENTRE, vm.Pick, step=m.step, block=-1, slot=0)]
        pos = int(np.searchsorted(np.cumsum(weights), self._rng.uniform(0, total), side="right"))
        pos = min(pos, weights.size - 1)
        starts = np.cumsum([0, *m.block_sizes])
        block = int(np.searchsorted(starts, pos, side="right") - 1)
        return [self._send(vm.CENTRE, vm.Pick, step=m.step, block=block,
                           slot=pos - int(starts[block]))]

    # ------------------------------------------------------------------ comparisons
    def _decrypt_labels(self, m: vm.Comparisons, n_centres: int) -> npt.NDArray[np.int64]:
        n_pairs = n_centres * (n_centres - 1) // 2
        if m.n_pairs != n_pairs or len(m.values) != n_pairs * len(self.sizes):
            raise _refuse(f"comparisons ({m.stage} {m.index}): {len(m.values)} ciphertexts, "
                          f"expected {n_pairs * len(self.sizes)}")
        chunks = chunk_indices(len(self.sizes), 2 * self._executor.n_workers)
        shape = self._shapes["comparisons"]
        parts = self._executor.map(labels_task, [
            (self._key, [m.values[b * n_pairs:(b + 1) * n_pairs] for b in c],
             [self.sizes[b] for b in c], n_centres, shape) for c in chunks])
        labels = []
        for part in parts:
            for block_labels, intransitive in part:
                labels.append(block_labels)
                self.log.intransitive += intransitive
        self.log.decrypted["comparisons"] += len(m.values)
        return np.concatenate(labels)

    def _onehots(self, labels: npt.NDArray[np.int64], groups: list[tuple[int, int | None]],
                 stage: str, index: int) -> tuple[str, Message]:
        starts = np.cumsum([0, *self.sizes])
        blocks = [labels[starts[b]:starts[b + 1]] for b in range(len(self.sizes))]
        chunks = chunk_indices(len(blocks), 2 * self._executor.n_workers)
        parts = self._executor.map(onehots_task, [
            (self._key, [blocks[b] for b in c], groups) for c in chunks])
        return self._send(vm.CENTRE, vm.OneHots, stage=stage, index=index,
                          per_block=len(groups),
                          onehots=tuple(b for part in parts for b in part))

    def _on_comparisons(self, m: vm.Comparisons) -> Outgoing:
        if m.stage == "init":
            labels = self._decrypt_labels(m, m.index)
            self._expect = {f"ShuffledD2:{m.index}"}
            return [self._onehots(labels, [(j, None) for j in range(m.index)], "init",
                                  m.index)]
        labels = self._decrypt_labels(m, self.k)
        if m.stage == "final":
            return self._release(labels)
        self._previous, self._labels = self._labels, labels
        self._expect = {f"Sums:{m.index}"}
        return [self._onehots(labels, packed(range(1, self.k)), "lloyd", m.index)]

    # ------------------------------------------------------------------ Lloyd update
    def _on_sums(self, m: vm.Sums) -> Outgoing:
        assert self._labels is not None and self._totals is not None
        k, d = self.k, self.d
        groups = packed(range(1, k))
        if len(m.sums) != len(groups) * d:
            raise _refuse(f"sums: {len(m.sums)} ciphertexts, expected {len(groups) * d}")
        sums = np.zeros((k, d))
        for g, (a, b) in enumerate(groups):
            for f in range(d):
                value = self._slot_sum(m.sums[g * d + f], "sums", "sums", complex_slots=True)
                sums[a, f] = value.real
                if b is not None:
                    sums[b, f] = value.imag
        sums[0] = self._totals - sums[1:].sum(axis=0)
        counts = np.bincount(self._labels, minlength=k).astype(np.int64)
        excess = np.abs(sums) - counts[:, None]
        if np.any(excess > SLACK + 1e-6 * self.n_samples):
            raise _refuse("per-cluster sums exceed what their records (|x| <= 1) allow")
        self.log.counts.append(counts)
        self.log.exact_sums.append(sums)
        # After k-means++ the manager has never seen the initial centres (records): an empty
        # cluster then takes the largest cluster's centroid, and the shift is not measured.
        old = self.centroids_
        new = old.copy() if old is not None else np.zeros((k, d))
        fallback = int(np.argmax(counts))
        if self.dp is not None:
            noisy_sums, noisy_counts = gaussian_release(sums, counts.astype(np.float64), self.dp)
            self.log.noisy_sums.append(noisy_sums)
            self.log.noisy_counts.append(noisy_counts)
            for j in range(k):
                if noisy_counts[j] >= 1:
                    new[j] = noisy_sums[j] / noisy_counts[j]
                elif old is None:
                    new[j] = sums[fallback] / max(counts[fallback], 1)
            new = np.clip(new, np.array(self.dp.lower), np.array(self.dp.upper))
        else:
            for j in range(k):
                if counts[j] > 0:
                    new[j] = sums[j] / counts[j]
                else:  # no customer chose it: it keeps its centre (see the module docstring)
                    self.log.empty_clusters.append((m.index, j))
                    if old is None:
                        new[j] = sums[fallback] / counts[fallback]
        self.centroids_ = new
        self.n_iter_ = m.index + 1
        assert self.exponent is not None
        shift = math.inf if old is None else float(((new - old) ** 2).sum()) * 4.0**self.exponent
        strict = self._previous is not None and np.array_equal(self._previous, self._labels)
        if self.dp is None and strict:
            return self._release(self._labels)
        if self.n_iter_ >= self.max_iter or (self.dp is None and shift <= self.tol):
            return [self._centroids("final", self.n_iter_)]
        return [self._centroids("lloyd", self.n_iter_)]

    def _release(self, labels: npt.NDArray[np.int64]) -> Outgoing:
        self._expect = set()
        self._executor.drop_state(self._key)
        self.labels_ = labels
        self.done = True
        centroids = tuple(float(v) for v in self.released_centroids().ravel())
        blob = labels.astype(np.uint8).tobytes()
        out = [self._send(vm.holder_name(h), vm.Result, n_iter=self.n_iter_,
                          centroids=centroids, labels=blob) for h in self.holder_ids]
        out.append(self._send(vm.CENTRE, vm.Close))
        return out

    def epsilon_spent(self) -> float | None:
        return None if self.dp is None else self.dp.epsilon_spent()


def labels_task(args: tuple[str, list[tuple[bytes, ...]], list[int], int, tuple[int, float]]
                ) -> list[tuple[npt.NDArray[np.int64], int]]:
    """Per block: check the level and scale of the blinded comparisons, decrypt them, check
    their range, take the labels."""
    key, per_block, sizes, m, shape = args
    sk: CkksSecretContext = get_state(key)
    out = []
    for blobs, size in zip(per_block, sizes, strict=True):
        try:
            cts = [sk.ciphertext_from_bytes(b) for b in blobs]
        except CiphertextError as exc:
            raise _refuse(f"comparisons: {exc}") from exc
        for ct in cts:
            check_shape(sk, ct, shape, "comparisons")
        z = np.vstack([sk.decrypt(ct, size) for ct in cts])
        if not np.all(np.isfinite(z)):
            raise _refuse("comparisons are not finite numbers")
        if np.any(np.abs(z) > _ROOM):
            raise _refuse("comparisons exceed the range the blinding allows")
        out.append((labels_from_comparisons(z, m), _intransitive(z, m)))
    return out


def onehots_task(args: tuple[str, list[npt.NDArray[np.int64]], list[tuple[int, int | None]]]
                 ) -> list[bytes]:
    """Per block and group: Enc(label == a) or Enc((label == a) + i·(label == b)), one level
    below the top (padding slots 0)."""
    key, blocks, groups = args
    sk: CkksSecretContext = get_state(key)
    slots = PARAMS.slot_count
    out: list[bytes] = []
    for labels in blocks:
        block = np.full(slots, -1, dtype=np.int64)
        block[:labels.size] = labels
        for a, b in groups:
            hot = (block == a).astype(np.float64)
            values = hot if b is None else hot + 1j * (block == b)
            out.append(sk.encrypt_to_bytes(values, level=1))
    return out


def check_shape(sk: CkksSecretContext, ct: Any, shape: tuple[int, float], what: str) -> None:
    """Refuse, unopened, a ciphertext whose level, scale or size is not the one the protocol
    gives ``what`` (:func:`~cipherseg.protocols.vertical.session.decrypted_shapes`)."""
    level, scale = shape
    if ct.size() != 2 or ct.parms_id() != sk.level_parms_ids[level] or not math.isclose(
            ct.scale, scale, rel_tol=1e-9):
        raise _refuse(f"{what}: a ciphertext not at the level and scale of {what} (level "
                      f"{level}, scale 2^{math.log2(scale):.2f}); it was not decrypted")


def _key(message: Message) -> str:
    name = type(message).__name__
    if isinstance(message, vm.ScaleReport):
        return f"{name}:{message.holder_id}"
    if isinstance(message, (vm.MaskedRecord, vm.ShuffledD2)):
        return f"{name}:{message.step}"
    if isinstance(message, vm.Comparisons):
        return f"{name}:{message.stage}:{message.index}"
    if isinstance(message, vm.Sums):
        return f"{name}:{message.index}"
    return name


def _intransitive(z: npt.NDArray[np.float64], m: int) -> int:
    """Customers for whom no cluster won every comparison (near-ties within τ)."""
    return int(np.sum(_wins(z, m).max(axis=0) < m - 1))


def _refuse(what: str) -> ProtocolError:
    return ProtocolError(f"manager refused the centre's {what}; the centre did not follow "
                         "protocol 4.5 or its reply was altered in transit; nothing was released")


__all__ = ["BLIND_MIN_BITS", "ManagerLog", "VerticalManager", "blind_max_bits",
           "labels_from_comparisons"]
