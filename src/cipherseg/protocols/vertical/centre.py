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

import itertools
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import CiphertextError, ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.vertical import messages as vm
from cipherseg.protocols.vertical.psi import POINT_BYTES, unpack_points
from cipherseg.protocols.vertical.session import (
    BLIND_MIN_BITS,
    D2_SCALE_BITS,
    MASK_BITS,
    TIE_TOLERANCE,
    Outgoing,
    blind_max_bits,
    pairs,
)
from cipherseg.schemes.ckks import CkksPublicContext

#: Largest number of shared customers a session accepts (bounds the centre's memory).
MAX_CUSTOMERS = 5_000_000


class VerticalCentre:
    """Server side of protocol 4.5: ``handle(sender, message) -> [(recipient, message)]``.

    Parameters
    ----------
    random_state:
        Seed for the centre's secret choices (first record, blinding factors, masks,
        permutation) — for reproducible tests only; ``None`` draws from the OS CSPRNG.
    """

    name = vm.CENTRE

    def __init__(self, random_state: int | None = None) -> None:
        seed = random_state if random_state is not None else secrets.randbits(128)
        self._rng = np.random.default_rng(seed)
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
        self._distances: list[list[Any]] = []  # ‖x − c_j‖² per chosen centre and block
        self._mask: tuple[int, int, npt.NDArray[np.float64]] | None = None
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
        if ctx.galois_keys is None:
            raise ProtocolError("centre: the manager's context carries no rotation keys")
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
        self._uploads = {}
        self._loaded = {}
        d = sum(setup.holder_features)
        totals = []
        for f in range(d):
            acc = self._x_low[0][f]
            for row in self._x_low[1:]:
                acc = ctx.add(acc, row[f])
            totals.append(ctx.ciphertext_to_bytes(ctx.sum_slots(acc)))
        self._expect = {"InitStart", "Centroids:lloyd:0"}
        return [self._send(vm.MANAGER, vm.Totals, sums=tuple(totals))]

    # ------------------------------------------------------------------ k-means++
    def _on_init_start(self, m: vm.InitStart) -> Outgoing:
        index = int(self._rng.integers(self.n_samples))
        return [self._masked_record(0, index)]

    def _masked_record(self, step: int, index: int) -> tuple[str, Message]:
        ctx = self._require_ctx()
        block, slot = divmod(index, ctx.params.slot_count)
        self.picked_indices.append(index)
        bound = 2.0**MASK_BITS
        masks = self._rng.uniform(-bound, bound, size=(len(self._x_top[block]),
                                                       ctx.params.slot_count))
        self._mask = (block, slot, masks)
        masked = tuple(ctx.ciphertext_to_bytes(ctx.mod_switch_to_next(ctx.add_plain(x, masks[f])))
                       for f, x in enumerate(self._x_top[block]))
        self._expect = {f"NewCentre:{step}"}
        return self._send(vm.MANAGER, vm.MaskedRecord, step=step, slot=slot, masked=masked)

    def _on_new_centre(self, m: vm.NewCentre) -> Outgoing:
        setup = self._require_setup()
        ctx = self._require_ctx()
        if self._mask is None or len(m.centre) != len(self._x_top[0]):
            raise ProtocolError("centre: NewCentre must carry one ciphertext per feature")
        _, slot, masks = self._mask
        self._mask = None
        centre = []
        for f, blob in enumerate(m.centre):
            ct = _load(ctx, blob, "the new centre")
            if ct.parms_id() != ctx.top_parms_id:
                raise ProtocolError("centre: the new centre is not at the top level")
            centre.append(ctx.sub_plain(ct, float(masks[f][slot])))
        self._centres.append(centre)
        self._distances.append([_squared_distance(ctx, row, centre) for row in self._x_top])
        step = len(self._centres)
        if step == setup.n_clusters:
            self._x_top = []  # k-means++ is over; Lloyd works one level lower
            self._distances = []
            low = [[ctx.mod_switch_to_next(c) for c in centre] for centre in self._centres]
            self._centres = []
            return [self._comparisons("lloyd", 0, low)]
        if step == 1:
            d2 = [ctx.multiply_integer(e, self._d2_factor()) for e in self._distances[0]]
            return [self._shuffled_d2(step, d2)]
        low = [[ctx.mod_switch_to_next(c) for c in centre] for centre in self._centres]
        return [self._comparisons("init", step, low)]

    def _d2_factor(self) -> int:
        return int(self._rng.integers(1, 2**D2_SCALE_BITS + 1))

    def _shuffled_d2(self, step: int, d2: Sequence[Any]) -> tuple[str, Message]:
        ctx = self._require_ctx()
        perm = self._rng.permutation(len(self.sizes))
        self._permutation = perm
        self._expect = {f"Pick:{step}"}
        return self._send(vm.MANAGER, vm.ShuffledD2, step=step,
                          block_sizes=tuple(self.sizes[i] for i in perm),
                          d2=tuple(ctx.ciphertext_to_bytes(d2[i]) for i in perm))

    def _on_pick(self, m: vm.Pick) -> Outgoing:
        perm = self._permutation
        if perm is None:
            raise ProtocolError("centre: a pick without a D² round")
        self._permutation = None
        if m.block == -1:
            index = int(self._rng.integers(self.n_samples))
        else:
            if not 0 <= m.block < len(self.sizes):
                raise ProtocolError("centre: the pick refers to no block")
            block = int(perm[m.block])
            if not 0 <= m.slot < self.sizes[block]:
                raise ProtocolError("centre: the pick refers to an empty slot")
            index = block * self._require_ctx().params.slot_count + m.slot
        return [self._masked_record(m.step, index)]

    # ------------------------------------------------------------------ comparisons
    def _comparisons(self, stage: str, index: int, centres: Sequence[Sequence[Any]]
                     ) -> tuple[str, Message]:
        """r·(‖x−c_j‖² − ‖x−c_l‖² − τ) for every pair j < l of ``centres`` (level one below
        the top), as L_j − L_l with L_j = ‖c_j‖² − 2⟨x, c_j⟩: linear in x, no ‖x‖²."""
        ctx = self._require_ctx()
        setup = self._require_setup()
        m = len(centres)
        neg2 = [[ctx.multiply_integer(c, -2) for c in centre] for centre in centres]
        norms = []
        for centre in centres:
            acc = ctx.square(centre[0])
            for c in centre[1:]:
                acc = ctx.add(acc, ctx.square(c))
            norms.append(acc)
        d = sum(setup.holder_features)
        low_bits, high_bits = BLIND_MIN_BITS, blind_max_bits(d)
        slots = ctx.params.slot_count
        tau = None
        values: list[bytes] = []
        for row in self._x_low:
            lin = []
            for j in range(m):
                acc = norms[j]
                for f in range(d):
                    acc = ctx.add(acc, ctx.multiply(neg2[j][f], row[f]))
                lin.append(ctx.relinearize(acc))
            for j, other in pairs(m):
                diff = ctx.sub(lin[j], lin[other])
                if tau is None:
                    tau = ctx.encode(TIE_TOLERANCE, scale=diff.scale, parms_id=diff.parms_id())
                ctx.evaluator.sub_plain_inplace(diff, tau)
                # Log-uniform positive factors, one per customer and pair, encoded at scale 1
                # (no level used): the encoding error (|e| ≤ N/2 = 4096 < 2^13) only perturbs
                # the factor, never its sign.
                factors = np.exp2(self._rng.uniform(low_bits, high_bits, slots))
                plain = ctx.encode(factors, scale=1.0, parms_id=diff.parms_id())
                ctx.evaluator.multiply_plain_inplace(diff, plain)
                values.append(ctx.ciphertext_to_bytes(ctx.rescale(diff)))
        if stage == "init":
            self._expect = {f"OneHots:init:{index}"}
        elif stage == "lloyd":
            self._expect = {f"OneHots:lloyd:{index}"}
        else:
            self._expect = set()
        return self._send(vm.MANAGER, vm.Comparisons, stage=stage, index=index,
                          n_pairs=m * (m - 1) // 2, values=tuple(values))

    def _on_centroids(self, m: vm.Centroids) -> Outgoing:
        setup = self._require_setup()
        ctx = self._require_ctx()
        k, d = setup.n_clusters, sum(setup.holder_features)
        if len(m.centroids) != k * d:
            raise ProtocolError(f"centre: expected {k}×{d} centroid ciphertexts, got "
                                f"{len(m.centroids)}")
        cts = [_load(ctx, b, "the centroids") for b in m.centroids]
        if any(ct.parms_id() != ctx.level_parms_ids[1] for ct in cts):
            raise ProtocolError("centre: centroids must be encrypted one level below the top")
        centres = [cts[j * d:(j + 1) * d] for j in range(k)]
        return [self._comparisons(m.stage, m.index, centres)]

    # ------------------------------------------------------------------ one-hots
    def _on_onehots(self, m: vm.OneHots) -> Outgoing:
        setup = self._require_setup()
        ctx = self._require_ctx()
        n_blocks = len(self.sizes)
        per_block = len(self._centres) if m.stage == "init" else setup.n_clusters - 1
        if m.n_clusters != per_block or len(m.onehots) != per_block * n_blocks:
            raise ProtocolError(f"centre: expected {per_block * n_blocks} one-hot ciphertexts "
                                f"({per_block} per block), got {len(m.onehots)}")
        hots = [_load(ctx, b, "the one-hots") for b in m.onehots]
        if any(h.parms_id() != ctx.level_parms_ids[1] for h in hots):
            raise ProtocolError("centre: one-hots must be encrypted one level below the top")
        if m.stage == "init":
            return [self._init_d2(m.index, hots, per_block)]
        return [self._sums(m.index, hots, per_block)]

    def _init_d2(self, step: int, hots: list[Any], m: int) -> tuple[str, Message]:
        """D²(x) = Σ_j h_j(x)·‖x − c_j‖² (the manager's one-hot of the nearest centre)."""
        ctx = self._require_ctx()
        d2 = []
        for b in range(len(self.sizes)):
            acc = None
            for j in range(m):
                term = ctx.multiply(hots[b * m + j], self._distances[j][b])
                acc = term if acc is None else ctx.add(acc, term)
            d2.append(ctx.multiply_integer(ctx.rescale(ctx.relinearize(acc)), self._d2_factor()))
        return self._shuffled_d2(step, d2)

    def _sums(self, index: int, hots: list[Any], per_block: int) -> tuple[str, Message]:
        """Σ over all customers of h_j(x)·x_f for clusters 1..k−1: products added in
        three-component form, relinearised, summed over slots (rotations, before the rescale
        so their noise is divided too), rescaled."""
        ctx = self._require_ctx()
        d = len(self._x_low[0])
        acc: list[list[Any]] = []
        for b, row in enumerate(self._x_low):
            for j in range(per_block):
                h = hots[b * per_block + j]
                if b == 0:
                    acc.append([ctx.multiply(h, x) for x in row])
                else:
                    for f in range(d):
                        ctx.add_inplace(acc[j][f], ctx.multiply(h, row[f]))
        sums = tuple(ctx.ciphertext_to_bytes(ctx.rescale(ctx.sum_slots(ctx.relinearize(s))))
                     for cluster in acc for s in cluster)
        self._expect = {f"Centroids:lloyd:{index + 1}", f"Centroids:final:{index + 1}"}
        return self._send(vm.MANAGER, vm.Sums, index=index, sums=sums)

    # ------------------------------------------------------------------ end
    def _drop(self) -> None:
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


def _squared_distance(ctx: CkksPublicContext, row: Sequence[Any], centre: Sequence[Any]) -> Any:
    acc = None
    for x, c in zip(row, centre, strict=True):
        diff = ctx.sub(x, c)
        sq = ctx.square(diff)
        acc = sq if acc is None else ctx.add(acc, sq)
    return ctx.rescale(ctx.relinearize(acc))
