"""Protocol 4.5 (vertical k-means): a feature holder (the mall, a merchant, …).

Its customers' identifiers and columns never leave this party in clear: identifiers only as
blinded group elements (:mod:`cipherseg.protocols.vertical.psi`), columns only as CKKS
ciphertexts under the manager's *public* key — a holder cannot decrypt anything, not even its
own upload. It learns the intersection (which of its customers are shared), the released
centroids and its shared customers' final labels. Leakage: :mod:`cipherseg.protocols.vertical`.
"""

from __future__ import annotations

import itertools
import math
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.engine.base import Executor
from cipherseg.errors import ParameterError, ProtocolError, ValidationError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing
from cipherseg.protocols.vertical import messages as vm
from cipherseg.protocols.vertical import psi
from cipherseg.schemes.ckks import CkksPublicContext


def as_identifiers(ids: Sequence[str | bytes | int]) -> list[bytes]:
    """Customer identifiers as bytes (strings UTF-8 encoded, integers in decimal).

    >>> as_identifiers(["+8613800000001", 7, b"x"])
    [b'+8613800000001', b'7', b'x']
    """
    out = []
    for v in ids:
        if isinstance(v, bytes):
            out.append(v)
        elif isinstance(v, str):
            out.append(v.encode("utf-8"))
        elif isinstance(v, (int, np.integer)):
            out.append(str(int(v)).encode())
        else:
            raise ValidationError(f"a customer identifier must be str, bytes or int, got "
                                  f"{type(v).__name__}")
    return out


class VerticalHolder:
    """A feature holder: ``handle(sender, message) -> [(recipient, message)]``.

    Parameters
    ----------
    holder_id:
        1, 2, … as named in the manager's Setup.
    ids:
        One identifier per row (phone numbers in E.164, or a pseudonym all holders share);
        duplicates are refused.
    X:
        Its columns, shape (n_rows, d_i), input units.
    executor:
        Where PSI group operations run (a process pool speeds them up); default this process.
    """

    def __init__(self, holder_id: int, ids: Sequence[str | bytes | int], X: npt.ArrayLike, *,
                 executor: Executor | None = None) -> None:
        if holder_id < 1:
            raise ParameterError("holder ids are 1, 2, …")
        self.holder_id = holder_id
        self.name = vm.holder_name(holder_id)
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValidationError(f"{self.name}: X must be a non-empty 2-D array")
        if not np.all(np.isfinite(arr)):
            raise ValidationError(f"{self.name}: X contains NaN or infinite values")
        self._ids = as_identifiers(ids)
        if len(self._ids) != arr.shape[0]:
            raise ValidationError(f"{self.name}: {len(self._ids)} identifiers for "
                                  f"{arr.shape[0]} rows")
        psi.check_unique(self._ids, self.name)
        self._X = arr
        self._executor = executor
        self._setup: vm.Setup | None = None
        self._ctx: CkksPublicContext | None = None
        self._scalar = b""
        self._finish = b""  # m ≥ 3: applied to its own list when it comes back (psi module)
        self._sent_order: npt.NDArray[np.int64] | None = None
        self._tag_rows: dict[bytes, int] = {}
        self._expect: set[str] = set()
        self._round = 0
        self.session_id = ""
        #: Row indices (into this holder's X) of the shared customers, in the shared order.
        self.shared_rows_: npt.NDArray[np.int64] | None = None
        #: Final label of each of this holder's rows; −1 for customers not shared.
        self.labels_: npt.NDArray[np.int64] | None = None
        self.cluster_centers_: npt.NDArray[np.float64] | None = None
        self.n_iter_ = 0
        self.timings: dict[str, float] = defaultdict(float)
        self.done = False
        self.aborted: str | None = None

    @property
    def n_features(self) -> int:
        return int(self._X.shape[1])

    # ------------------------------------------------------------------ dispatch
    def handle(self, sender: str, message: Message) -> Outgoing:
        if isinstance(message, vm.Setup):
            return self._on_setup(sender, message)
        if self._setup is None and not isinstance(message, vm.Abort):
            # Over a network another holder's PSI list can overtake the manager's set-up.
            raise NotReady(f"{self.name}: {type(message).__name__} before its Setup")
        if self._setup is None or message.session_id != self.session_id:
            raise ProtocolError(f"{self.name}: {type(message).__name__} for a session it has "
                                "not joined")
        if isinstance(message, vm.Abort):
            self.aborted = message.reason or f"{sender} aborted"
            self._drop()
            # Another party refused the end of the session (say, its copy of the result): a
            # result this holder already took is withdrawn, so no holder keeps a partial release.
            self.labels_ = self.cluster_centers_ = None
            self.done = False
            return []
        key = f"{type(message).__name__}"
        if isinstance(message, vm.PsiBlinded):
            key += f":{message.origin}"
        if key not in self._expect:
            raise ProtocolError(f"{self.name}: unexpected {key} from {sender} (expected "
                                f"{sorted(self._expect) or 'nothing'})")
        self._round = max(self._round, message.round)
        start = time.perf_counter()
        if isinstance(message, vm.PsiBlinded):
            out = self._on_blinded(sender, message)
        elif isinstance(message, vm.PsiResult):
            out = self._on_psi_result(sender, message)
        elif isinstance(message, vm.Scale):
            out = self._on_scale(sender, message)
        elif isinstance(message, vm.Result):
            out = self._on_result(sender, message)
        else:
            raise ProtocolError(f"{self.name}: does not accept {type(message).__name__}")
        self._expect.discard(key)
        self.timings[vm.stage_of(message)] += time.perf_counter() - start
        return out

    def _send(self, dst: str, cls: type[Message], **fields: Any) -> tuple[str, Message]:
        self._round += 1
        return dst, vm.new_message(cls, self.session_id, self._round, **fields)

    def _require_setup(self) -> vm.Setup:
        if self._setup is None:
            raise ProtocolError(f"{self.name}: no session")
        return self._setup

    def _ring(self) -> tuple[int, ...]:
        return self._require_setup().holder_ids

    @staticmethod
    def _from(sender: str, expected: str, what: str) -> None:
        if sender != expected:
            raise ProtocolError(f"{what} must come from {expected}, not {sender}")

    # ------------------------------------------------------------------ set-up and PSI
    def _on_setup(self, sender: str, m: vm.Setup) -> Outgoing:
        self._from(sender, vm.MANAGER, f"{self.name}: Setup")
        if self._setup is not None:
            raise ProtocolError(f"{self.name}: already in session {self.session_id!r}")
        if self.holder_id not in m.holder_ids:
            raise ProtocolError(f"{self.name} is not a holder of session {m.session_id!r}")
        d_i = m.holder_features[m.holder_ids.index(self.holder_id)]
        if d_i != self.n_features:
            raise ValidationError(f"{self.name} has {self.n_features} columns; the session "
                                  f"expects {d_i}")
        if len(m.psi_session) < 16:
            raise ProtocolError(f"{self.name}: the PSI session label is too short")
        start = time.perf_counter()
        self._ctx = CkksPublicContext.from_bytes(m.public_context)
        self._setup = m
        self.session_id = m.session_id
        self._scalar = psi.random_scalar()  # fresh per run
        first = self._scalar
        if len(m.holder_ids) >= 3:  # the last hop must not see this holder's final tags
            first, self._finish = psi.ratio_scalar(self._scalar)
        points = psi.hash_many(self._ids, m.psi_session, self._executor)
        blinded = psi.blind_many(points, first, self._executor)
        order = np.argsort(np.array(blinded, dtype=object)).astype(np.int64)
        self._sent_order = order
        ring = m.holder_ids
        self._expect = {f"PsiBlinded:{h}" for h in ring}
        self.timings["psi"] += time.perf_counter() - start
        nxt = ring[(ring.index(self.holder_id) + 1) % len(ring)]
        return [self._send(vm.holder_name(nxt), vm.PsiBlinded, origin=self.holder_id, hop=1,
                           points=psi.pack_points([blinded[i] for i in order]))]

    def _on_blinded(self, sender: str, m: vm.PsiBlinded) -> Outgoing:
        ring = self._ring()
        if m.origin not in ring:
            raise ProtocolError(f"{self.name}: PSI list of unknown holder {m.origin}")
        size = len(ring)
        at = ring.index(m.origin)
        own = m.origin == self.holder_id
        hop_ok = m.hop == size if own else 1 <= m.hop < size
        if not hop_ok or ring[(at + m.hop) % size] != self.holder_id:
            raise ProtocolError(f"{self.name}: PSI list of holder {m.origin} at hop {m.hop} "
                                "is not for this holder")
        self._from(sender, vm.holder_name(ring[(at + m.hop - 1) % size]),
                   f"{self.name}: PSI list of holder {m.origin} at hop {m.hop}")
        if own:
            tags = psi.unpack_points(m.points, f"{self.name}: own PSI list",
                                     expected=len(self._ids))
            if self._finish:
                tags = psi.blind_many(tags, self._finish, self._executor)
            assert self._sent_order is not None
            self._tag_rows = {t: int(r) for t, r in zip(tags, self._sent_order, strict=True)}
            if len(self._tag_rows) != len(tags):
                raise ProtocolError(f"{self.name}: its PSI list came back with duplicated "
                                    "tags; another holder did not follow the protocol")
            self._expect.add("PsiResult")
            return [self._send(vm.CENTRE, vm.PsiTags, holder_id=self.holder_id,
                               tags=psi.pack_points(sorted(tags)))]
        points = psi.unpack_points(m.points, f"{self.name}: holder {m.origin}'s PSI list")
        blinded = psi.blind_many(points, self._scalar, self._executor)
        hop = m.hop + 1
        dst = m.origin if hop == size else ring[(at + hop) % size]
        return [self._send(vm.holder_name(dst), vm.PsiBlinded, origin=m.origin, hop=hop,
                           points=psi.pack_points(blinded))]

    def _on_psi_result(self, sender: str, m: vm.PsiResult) -> Outgoing:
        setup = self._require_setup()
        self._from(sender, vm.CENTRE, f"{self.name}: PsiResult")
        tags = psi.unpack_points(m.tags, f"{self.name}: intersection")
        if any(a >= b for a, b in itertools.pairwise(tags)):
            raise ProtocolError(f"{self.name}: the intersection is not sorted and unique")
        rows = [self._tag_rows.get(t) for t in tags]
        if any(r is None for r in rows):
            raise ProtocolError(f"{self.name}: the intersection names a customer this holder "
                                "does not have; the centre did not follow the protocol")
        if len(rows) < setup.n_clusters:
            raise ProtocolError(f"{self.name}: {len(rows)} shared customers for "
                                f"{setup.n_clusters} clusters")
        self.shared_rows_ = np.array(rows, dtype=np.int64)
        self._tag_rows = {}
        self._expect = {"Scale"}
        return [self._send(vm.MANAGER, vm.ScaleReport, holder_id=self.holder_id,
                           exponent=self._exponent(), n_shared=len(rows),
                           intersection=psi.intersection_digest(m.tags))]

    def _aligned(self) -> npt.NDArray[np.float64]:
        """This holder's shared rows in the shared order; with DP clipped into the public
        bounds and centred on their middle."""
        setup = self._require_setup()
        assert self.shared_rows_ is not None
        X = self._X[self.shared_rows_]
        if setup.dp_epsilon > 0:
            lo, hi = self._bounds()
            X = np.clip(X, lo, hi) - (lo + hi) / 2.0
        return X

    def _bounds(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        setup = self._require_setup()
        at = setup.holder_ids.index(self.holder_id)
        start = sum(setup.holder_features[:at])
        stop = start + self.n_features
        if len(setup.dp_lower) != sum(setup.holder_features) or \
                len(setup.dp_upper) != len(setup.dp_lower):
            raise ProtocolError(f"{self.name}: DP bounds do not cover every joined feature")
        return (np.asarray(setup.dp_lower[start:stop], dtype=np.float64),
                np.asarray(setup.dp_upper[start:stop], dtype=np.float64))

    def _exponent(self) -> int:
        """The least e with |x| ≤ 2^e over what this holder will encrypt (in DP mode, of the
        public bounds' half-widths of every joined feature: data-independent)."""
        setup = self._require_setup()
        if setup.dp_epsilon > 0:
            half = (np.asarray(setup.dp_upper) - np.asarray(setup.dp_lower)) / 2.0
            return math.frexp(float(np.max(half)))[1]
        peak = float(np.max(np.abs(self._aligned())))
        return math.frexp(peak)[1] if peak > 0 else -60

    def _on_scale(self, sender: str, m: vm.Scale) -> Outgoing:
        self._from(sender, vm.MANAGER, f"{self.name}: Scale")
        if m.exponent < self._exponent():
            raise ProtocolError(f"{self.name}: the common scale 2^{m.exponent} is below its "
                                "data's range; the manager did not follow the protocol")
        assert self._ctx is not None
        X = self._aligned() / 2.0**m.exponent
        slots = self._ctx.params.slot_count
        n = X.shape[0]
        sizes = tuple(min(slots, n - s) for s in range(0, n, slots))
        blobs = []
        for b, start in enumerate(range(0, n, slots)):
            for f in range(self.n_features):
                column = X[start:start + sizes[b], f]
                blobs.append(self._ctx.ciphertext_to_bytes(self._ctx.encrypt_public(column)))
        self._expect = {"Result"}
        return [self._send(vm.CENTRE, vm.Upload, holder_id=self.holder_id,
                           n_features=self.n_features, block_sizes=sizes,
                           features=tuple(blobs))]

    def _on_result(self, sender: str, m: vm.Result) -> Outgoing:
        setup = self._require_setup()
        self._from(sender, vm.MANAGER, f"{self.name}: Result")
        assert self.shared_rows_ is not None
        k, d = setup.n_clusters, sum(setup.holder_features)
        labels = np.frombuffer(m.labels, dtype=np.uint8).astype(np.int64)
        if labels.size != self.shared_rows_.size or (labels.size and labels.max() >= k):
            raise ProtocolError(f"{self.name}: the result has {labels.size} labels for "
                                f"{self.shared_rows_.size} shared customers or a label ≥ {k}")
        centres = np.asarray(m.centroids, dtype=np.float64)
        if centres.size != k * d or not np.all(np.isfinite(centres)):
            raise ProtocolError(f"{self.name}: the result's centroids are not {k}×{d} numbers")
        own = np.full(self._X.shape[0], -1, dtype=np.int64)
        own[self.shared_rows_] = labels
        self.labels_ = own
        self.cluster_centers_ = centres.reshape(k, d)
        self.n_iter_ = m.n_iter
        self.done = True
        self._drop()
        return []

    def _drop(self) -> None:
        self._scalar = self._finish = secrets.token_bytes(0)
        self._tag_rows = {}
        self._expect = set()
