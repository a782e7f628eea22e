"""Protocol 4.5 (vertical k-means): the compute centre.

It holds the manager's *public* context (public, relinearisation and rotation keys:
:class:`~cipherseg.schemes.ckks.CkksPublicContext` refuses a secret key), every holder's
encrypted columns, and computes on ciphertexts only; this module may not import key-holding
code (import-linter contract). It intersects the holders' PSI tags (random group elements to
it), so it learns the set sizes. Its secret choices — the first k-means++ record, the blinding
factors, the D² scale, the masks and the block permutation — never leave it.

Layout: customers in the shared order, 4,096 per block; one ciphertext per (block, joined
feature); the holders' columns side by side in holder order. Levels of the chain
(60, 50, 40 | 60), scale 2^40: uploads at the top (k-means++ needs two multiplications:
‖x − c‖², then the one-hot selection), Lloyd work on a copy one prime lower.

>>> VerticalCentre().holds_secret_key()
False
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from cipherseg.engine.base import Executor, chunk_indices
from cipherseg.engine.local import LocalExecutor
from cipherseg.errors import CiphertextError, ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing
from cipherseg.protocols.vertical import centre_ops as ops
from cipherseg.protocols.vertical import messages as vm
from cipherseg.protocols.vertical.psi import POINT_BYTES, unpack_points
from cipherseg.protocols.vertical.session import (
    BLIND_MIN_BITS,
    D2_SCALE_BITS,
    MASK_BITS,
    below,
    blind_max_bits,
    data_primes,
    packed,
    permutation,
    uniform,
)
from cipherseg.schemes.ckks import CkksPublicContext
from cipherseg.schemes.rlwe_sampling import RandomSource, SeededRandomSource, SystemRandomSource

#: Largest number of shared customers a session accepts (bounds the centre's memory).
MAX_CUSTOMERS = 5_000_000


class VerticalCentre:
    """Server side of protocol 4.5: ``handle(sender, message) -> [(recipient, message)]``.

    Parameters
    ----------
    random_state:
        Seed for the centre's secret choices (first record, blinding factors, masks,
        permutation) — for reproducible tests only; ``None`` draws them from the OS CSPRNG.
        The manager sees r·(P − τ) for every comparison, and P itself in the padding slots, so
        the blinding must not come from a predictable generator: every comparison task expands
        a fresh 256-bit key with SHAKE-256.
    executor:
        Where block work runs (:mod:`cipherseg.engine`); default this process.
    """

    name = vm.CENTRE

    def __init__(self, random_state: int | None = None, executor: Executor | None = None
                 ) -> None:
        self._random: RandomSource = SystemRandomSource() if random_state is None else \
            SeededRandomSource(hashlib.sha256(str(random_state).encode()).digest(),
                               b"cipherseg/vertical/centre")
        self._executor: Executor = executor if executor is not None else LocalExecutor()
        self._key = f"vertical-centre-{secrets.token_hex(8)}"
        self._state: ops.CentreState | None = None
        self.session_id = ""
        self._setup: vm.Setup | None = None
        self._ctx: CkksPublicContext | None = None
        self._tags: dict[int, list[bytes]] = {}
        self._uploads: dict[int, vm.Upload] = {}
        self.n_samples = 0
        self.sizes: list[int] = []
        self._x_top: list[list[Any]] = []
        self._x_low: list[list[Any]] = []
        self._centres: list[list[Any]] = []  # k-means++ centres, top level
        self._distances: list[list[bytes]] = []  # ‖x − c_j‖² per chosen centre and block
        self._mask: tuple[int, int, npt.NDArray[np.float64]] | None = None  # block, slot, R
        self._permutation: npt.NDArray[np.int64] | None = None
        self._expect: set[str] = set()
        self._round = 0
        self.picked_indices: list[int] = []
        self.timings: dict[str, float] = defaultdict(float)
        self.closed = False

    def holds_secret_key(self) -> bool:
        """False by construction: a public context cannot decrypt (tests scan for more)."""
        return self._ctx is not None and self._ctx.is_private()

    # ------------------------------------------------------------------ dispatch
    def handle(self, sender: str, message: Message) -> Outgoing:
        if isinstance(message, vm.Setup):
            return self._on_setup(sender, message)
        if self._setup is None and not isinstance(message, (vm.Abort, vm.Close)):
            # Over a network a holder's PSI tags can overtake the manager's set-up.
            raise NotReady(f"centre: {type(message).__name__} before its Setup")
        if self._setup is None or message.session_id != self.session_id:
            raise ProtocolError(f"centre: {type(message).__name__} for session "
                                f"{message.session_id!r}, which it has not opened")
        if isinstance(message, (vm.Abort, vm.Close)):
            if sender != vm.MANAGER and isinstance(message, vm.Close):
                raise ProtocolError(f"centre: only the manager closes a session, not {sender}")
            self._drop()
            return []
        key = _key(message)
        expected_sender = _sender_of(message)
        if sender != expected_sender:
            raise ProtocolError(f"centre: {type(message).__name__} must come from "
                                f"{expected_sender}, not {sender}")
        if key not in self._expect:
            raise ProtocolError(f"centre: unexpected {key} (expected one of "
                                f"{sorted(self._expect) or 'nothing'})")
        self._round = max(self._round, message.round)
        start = time.perf_counter()
        handler = {
            vm.PsiTags: self._on_tags, vm.Upload: self._on_upload,
            vm.InitStart: self._on_init_start, vm.NewCentre: self._on_new_centre,
            vm.OneHots: self._on_onehots, vm.Pick: self._on_pick,
            vm.Centroids: self._on_centroids,
        }[type(message)]
        out: Outgoing = handler(message)  # type: ignore[operator]
        self.timings[vm.stage_of(message)] += time.perf_counter() - start
        return out

    def _send(self, dst: str, cls: type[Message], **fields: Any) -> tuple[str, Message]:
        self._round += 1
        return dst, vm.new_message(cls, self.session_id, self._round, **fields)

    def _require_ctx(self) -> CkksPublicContext:
        if self._ctx is None:
            raise ProtocolError("centre: no session context")
        return self._ctx

    def _require_setup(self) -> vm.Setup:
        if self._setup is None:
            raise ProtocolError("centre: no session")
        return self._setup

    # ------------------------------------------------------------------ set-up and PSI
    def _on_setup(self, sender: str, m: vm.Setup) -> Outgoing:
        if sender != vm.MANAGER:
            raise ProtocolError("centre: only the manager opens a session")
        if self._setup is not None:
            raise ProtocolError("centre: a session is already open")
        ctx = CkksPublicContext.from_bytes(m.public_context)
        if ctx.galois_keys is None or ctx.relin_keys is None:
            raise ProtocolError("centre: the manager's context lacks relinearisation or rotation "
                                "keys")
        self._ctx = ctx
        self._setup = m
        self.session_id = m.session_id
        self._expect = {f"PsiTags:{h}" for h in m.holder_ids}
        return []

    def _on_tags(self, m: vm.PsiTags) -> Outgoing:
        setup = self._require_setup()
        tags = unpack_points(m.tags, f"holder {m.holder_id}'s PSI tags")
        if any(a >= b for a, b in itertools.pairwise(tags)):
            raise ProtocolError(f"holder {m.holder_id}'s PSI tags are not sorted and unique")
        self._tags[m.holder_id] = tags
        self._expect.discard(f"PsiTags:{m.holder_id}")
        if len(self._tags) < len(setup.holder_ids):
            return []
        shared = set(self._tags[setup.holder_ids[0]])
        for h in setup.holder_ids[1:]:
            shared &= set(self._tags[h])
        n = len(shared)
        self._tags = {}
        if n < setup.n_clusters:
            raise ProtocolError(f"the holders share {n} customers, fewer than the "
                                f"{setup.n_clusters} clusters asked for; nothing was computed")
        if n > MAX_CUSTOMERS:
            raise ProtocolError(f"{n} shared customers exceed the centre's limit {MAX_CUSTOMERS}")
        self.n_samples = n
        slots = self._require_ctx().params.slot_count
        self.sizes = [min(slots, n - s) for s in range(0, n, slots)]
        self._expect = {f"Upload:{h}" for h in setup.holder_ids}
        blob = b"".join(sorted(shared))
        assert len(blob) == n * POINT_BYTES
        out = [self._send(vm.holder_name(h), vm.PsiResult, tags=blob) for h in setup.holder_ids]
        out.append(self._send(vm.MANAGER, vm.Aligned, n_samples=n))
        return out

    # ------------------------------------------------------------------ uploads
    def _on_upload(self, m: vm.Upload) -> Outgoing:
        setup = self._require_setup()
        ctx = self._require_ctx()
        d_i = setup.holder_features[setup.holder_ids.index(m.holder_id)]
        if m.n_features != d_i or tuple(m.block_sizes) != tuple(self.sizes):
            raise ProtocolError(f"holder {m.holder_id} uploaded {m.n_features} features over "
                                f"blocks {list(m.block_sizes)[:3]}…; the session expects {d_i} "
                                f"features over {len(self.sizes)} blocks of the shared order")
        if len(m.features) != d_i * len(self.sizes):
            raise ProtocolError(f"holder {m.holder_id} uploaded {len(m.features)} ciphertexts, "
                                f"expected {d_i * len(self.sizes)}")
        try:
            loaded = [ctx.ciphertext_from_bytes(b) for b in m.features]
        except CiphertextError as exc:
            raise ProtocolError(f"holder {m.holder_id}'s upload: {exc}") from exc
        if any(ct.parms_id() != ctx.top_parms_id or ct.size() != 2 for ct in loaded):
            raise ProtocolError(f"holder {m.holder_id}'s upload is not at the top level")
        self._uploads[m.holder_id] = m
        self._expect.discard(f"Upload:{m.holder_id}")
        per_holder: dict[int, list[Any]] = getattr(self, "_loaded", {})
        per_holder[m.holder_id] = loaded
        self._loaded = per_holder
        if len(self._uploads) < len(setup.holder_ids):
            return []
        # Join the columns, holder by holder, per block.
        self._x_top = []
        for b in range(len(self.sizes)):
            row: list[Any] = []
            for h, d_h in zip(setup.holder_ids, setup.holder_features, strict=True):
                row.extend(per_holder[h][b * d_h:(b + 1) * d_h])
            self._x_top.append(row)
        self._x_low = [[ctx.mod_switch_to_next(x) for x in row] for row in self._x_top]
        if setup.init != "k-means++":  # the top level serves k-means++ only
            self._x_top = []
        self._uploads = {}
        self._loaded = {}
        self._publish_state()
        d = sum(setup.holder_features)
        totals = []
        for f in range(d):
            acc = self._x_low[0][f]
            for row in self._x_low[1:]:
                acc = ctx.add(acc, row[f])
            totals.append(ctx.ciphertext_to_bytes(ctx.sum_slots(acc)))
        self._expect = {"InitStart", "Centroids:lloyd:0"}
        return [self._send(vm.MANAGER, vm.Totals, sums=tuple(totals))]

    def _publish_state(self) -> None:
        """(Re-)register the blocks where block work runs (forked workers inherit them)."""
        self._state = ops.CentreState(self._require_ctx(), self._x_top, self._x_low)
        state = self._state
        self._executor.put_state(self._key, lambda: state)

    def _map(self, fn: Any, make: Any, *, per_worker: bool = False) -> list[Any]:
        """``fn(make(chunk))`` over chunks of block indices, results in block order."""
        n_blocks = len(self.sizes)
        parts = self._executor.n_workers if per_worker else max(
            1, min(n_blocks, 4 * self._executor.n_workers))
        chunks = chunk_indices(n_blocks, parts)
        return list(self._executor.map(fn, [make(c) for c in chunks]))

    # ------------------------------------------------------------------ k-means++
    def _on_init_start(self, m: vm.InitStart) -> Outgoing:
        return [self._masked_record(0, below(self._random, self.n_samples))]

    def _masked_record(self, step: int, index: int) -> tuple[str, Message]:
        """The picked record x under a uniform mask R (±2^24) in its slot, every other slot
        zero: x_f times a selector encoded at scale q2, rescaled to level 1 and scale 2^40, plus
        R_f. The manager decrypts d masked values per pick, and can refuse a block."""
        ctx = self._require_ctx()
        block, slot = divmod(index, ctx.params.slot_count)
        self.picked_indices.append(index)
        bound = 2.0**MASK_BITS
        row = self._x_top[block]
        masks = uniform(self._random, -bound, bound, len(row))
        self._mask = (block, slot, masks)
        selector = np.zeros(ctx.params.slot_count)
        selector[slot] = 1.0
        plain = ctx.encode(selector, scale=float(data_primes(ctx.seal_context)[-1]),
                           parms_id=ctx.top_parms_id)
        masked = []
        for f, x in enumerate(row):
            picked = seal.Ciphertext()
            ctx.evaluator.multiply_plain(x, plain, picked)
            only = np.zeros(ctx.params.slot_count)
            only[slot] = masks[f]
            masked.append(ctx.ciphertext_to_bytes(ctx.add_plain(ctx.rescale(picked), only)))
        self._expect = {f"NewCentre:{step}"}
        return self._send(vm.MANAGER, vm.MaskedRecord, step=step, slot=slot,
                          masked=tuple(masked))

    def _on_new_centre(self, m: vm.NewCentre) -> Outgoing:
        setup = self._require_setup()
        ctx = self._require_ctx()
        if self._mask is None or len(m.centre) != len(self._x_top[0]):
            raise ProtocolError("centre: NewCentre must carry one ciphertext per feature")
        masks = self._mask[2]
        self._mask = None
        centre = []
        for f, blob in enumerate(m.centre):
            ct = _load(ctx, blob, "the new centre")
            if ct.parms_id() != ctx.top_parms_id:
                raise ProtocolError("centre: the new centre is not at the top level")
            centre.append(ctx.sub_plain(ct, float(masks[f])))
        self._centres.append(centre)
        top = tuple(ctx.ciphertext_to_bytes(c) for c in centre)
        parts = self._map(ops.distance_task, lambda c: (self._key, c, top))
        self._distances.append([b for part in parts for b in part])
        step = len(self._centres)
        if step == setup.n_clusters:
            low = self._low_bytes(self._centres)
            self._x_top = []  # k-means++ is over; Lloyd works one level lower
            self._distances = []
            self._centres = []
            self._publish_state()
            return [self._comparisons("lloyd", 0, low, setup.n_clusters)]
        if step == 1:
            return [self._shuffled_d2(step, None)]
        return [self._comparisons("init", step, self._low_bytes(self._centres), step)]

    def _low_bytes(self, centres: Sequence[Sequence[Any]]) -> tuple[bytes, ...]:
        ctx = self._require_ctx()
        return tuple(ctx.ciphertext_to_bytes(ctx.mod_switch_to_next(c))
                     for centre in centres for c in centre)

    def _d2_factor(self) -> int:
        return 1 + below(self._random, 2**D2_SCALE_BITS)

    def _shuffled_d2(self, step: int, hots: list[bytes] | None) -> tuple[str, Message]:
        """ρ·D²(x) for every customer — D² = Σ_j h_j·‖x − c_j‖² with the manager's one-hots
        of the nearest centre (padding slots 0), or ‖x − c_0‖² for the first step — blocks in
        a secret order."""
        m = len(self._distances)
        factor = self._d2_factor()
        n_blocks = len(self.sizes)

        def make(chunk: list[int]) -> Any:
            return (self._key,
                    [tuple(hots[b * m:(b + 1) * m]) if hots else () for b in chunk],
                    [tuple(self._distances[j][b] for j in range(m)) for b in chunk],
                    [factor] * len(chunk))

        d2 = [b for part in self._map(ops.d2_task, make) for b in part]
        perm = permutation(self._random, n_blocks)
        self._permutation = perm
        self._expect = {f"Pick:{step}"}
        return self._send(vm.MANAGER, vm.ShuffledD2, step=step,
                          block_sizes=tuple(self.sizes[i] for i in perm),
                          d2=tuple(d2[i] for i in perm))

    def _on_pick(self, m: vm.Pick) -> Outgoing:
        perm = self._permutation
        if perm is None:
            raise ProtocolError("centre: a pick without a D² round")
        self._permutation = None
        if m.block == -1:
            index = below(self._random, self.n_samples)
        else:
            if not 0 <= m.block < len(self.sizes):
                raise ProtocolError("centre: the pick refers to no block")
            block = int(perm[m.block])
            if not 0 <= m.slot < self.sizes[block]:
                raise ProtocolError("centre: the pick refers to an empty slot")
            index = block * self._require_ctx().params.slot_count + m.slot
        return [self._masked_record(m.step, index)]

    # ------------------------------------------------------------------ comparisons
    def _comparisons(self, stage: str, index: int, centres: tuple[bytes, ...], m: int
                     ) -> tuple[str, Message]:
        """r·(‖x−c_j‖² − ‖x−c_l‖² − τ) for every pair j < l of the ``m`` centres (bytes, one
        level below the top), per block (:func:`~.centre_ops.comparisons_task`)."""
        setup = self._require_setup()
        low_bits, high_bits = BLIND_MIN_BITS, blind_max_bits(sum(setup.holder_features))

        def make(chunk: list[int]) -> Any:
            key = self._random.random_bytes(32)  # each task's blinding stream, secret
            return (self._key, chunk, centres, m, key, low_bits, high_bits)

        parts = self._map(ops.comparisons_task, make)
        values = tuple(b for part in parts for block in part for b in block)
        if stage == "init":
            self._expect = {f"OneHots:init:{index}"}
        elif stage == "lloyd":
            self._expect = {f"OneHots:lloyd:{index}"}
        else:
            self._expect = set()
        return self._send(vm.MANAGER, vm.Comparisons, stage=stage, index=index,
                          n_pairs=m * (m - 1) // 2, values=values)

    def _on_centroids(self, m: vm.Centroids) -> Outgoing:
        setup = self._require_setup()
        ctx = self._require_ctx()
        k, d = setup.n_clusters, sum(setup.holder_features)
        last = m.index >= setup.max_iter if m.stage == "lloyd" else m.index > setup.max_iter
        if last:  # every round is a new set of hyperplane tests decrypted by the manager
            raise ProtocolError(f"centre: {m.stage} iteration {m.index} is beyond the session's "
                                f"max_iter={setup.max_iter}; refusing to compute it")
        if len(m.centroids) != k * d:
            raise ProtocolError(f"centre: expected {k}×{d} centroid ciphertexts, got "
                                f"{len(m.centroids)}")
        cts = [_load(ctx, b, "the centroids") for b in m.centroids]
        if any(ct.parms_id() != ctx.level_parms_ids[1] for ct in cts):
            raise ProtocolError("centre: centroids must be encrypted one level below the top")
        del cts
        return [self._comparisons(m.stage, m.index, tuple(m.centroids), k)]

    # ------------------------------------------------------------------ one-hots
    def _on_onehots(self, m: vm.OneHots) -> Outgoing:
        setup = self._require_setup()
        ctx = self._require_ctx()
        n_blocks = len(self.sizes)
        per_block = len(self._centres) if m.stage == "init" else len(
            packed(range(1, setup.n_clusters)))
        if m.per_block != per_block or len(m.onehots) != per_block * n_blocks:
            raise ProtocolError(f"centre: expected {per_block * n_blocks} one-hot ciphertexts "
                                f"({per_block} per block), got {len(m.onehots)}")
        for blob in m.onehots:
            if _load(ctx, blob, "the one-hots").parms_id() != ctx.level_parms_ids[1]:
                raise ProtocolError("centre: one-hots must be encrypted one level below the "
                                    "top")
        if m.stage == "init":
            return [self._shuffled_d2(m.index, list(m.onehots))]
        return [self._sums(m.index, list(m.onehots), per_block)]

    def _sums(self, index: int, hots: list[bytes], per_block: int) -> tuple[str, Message]:
        """Σ over all customers of h_j(x)·x_f for clusters 1..k−1 (two per ciphertext, as the
        one-hots): partial sums per worker (three-component products, relinearised once),
        added, summed over slots with rotations before the rescale (so their noise is divided
        too)."""
        ctx = self._require_ctx()
        partials = self._map(
            ops.sums_task,
            lambda c: (self._key, c, [tuple(hots[b * per_block:(b + 1) * per_block])
                                      for b in c]), per_worker=True)
        total = [ctx.ciphertext_from_bytes(b) for b in partials[0]]
        for part in partials[1:]:
            for i, blob in enumerate(part):
                ctx.add_inplace(total[i], ctx.ciphertext_from_bytes(blob))
        blobs = [ctx.ciphertext_to_bytes(t) for t in total]
        groups = [[blobs[i] for i in chunk]
                  for chunk in chunk_indices(len(blobs), self._executor.n_workers)]
        summed = self._executor.map(ops.slot_sum_task, [(self._key, g) for g in groups])
        self._expect = {f"Centroids:lloyd:{index + 1}", f"Centroids:final:{index + 1}"}
        return self._send(vm.MANAGER, vm.Sums, index=index,
                          sums=tuple(b for part in summed for b in part))

    # ------------------------------------------------------------------ end
    def _drop(self) -> None:
        self._executor.drop_state(self._key)
        self._state = None
        self._x_top, self._x_low, self._centres, self._distances = [], [], [], []
        self._uploads, self._tags, self._mask = {}, {}, None
        self._expect = set()
        self.closed = True


def _key(message: Message) -> str:
    name = type(message).__name__
    if isinstance(message, (vm.PsiTags, vm.Upload)):
        return f"{name}:{message.holder_id}"
    if isinstance(message, (vm.NewCentre, vm.Pick)):
        return f"{name}:{message.step}"
    if isinstance(message, (vm.OneHots, vm.Centroids)):
        return f"{name}:{message.stage}:{message.index}"
    if isinstance(message, vm.Close):
        return "Close"
    return name


def _sender_of(message: Message) -> str:
    if isinstance(message, (vm.PsiTags, vm.Upload)):
        return vm.holder_name(message.holder_id)
    return vm.MANAGER


def _load(ctx: CkksPublicContext, blob: bytes, what: str) -> Any:
    try:
        return ctx.ciphertext_from_bytes(blob)
    except CiphertextError as exc:
        raise ProtocolError(f"centre: {what}: {exc}") from exc

