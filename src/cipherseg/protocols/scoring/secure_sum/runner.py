"""Every party of the secure sum in this process: :class:`ThresholdSecureSum`, the aggregator
FedAvg (:func:`cipherseg.analytics.federated.fedavg_logistic`) calls.

One party object per participant — the manager, the centre and each owner — each holding only
its own key share; the in-process router (:func:`cipherseg.protocols.delivery.deliver`)
carries their messages as bytes, so the byte counts are what a network carries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError, ProtocolError, ValidationError
from cipherseg.protocols.delivery import Traffic, deliver
from cipherseg.protocols.party import Outgoing, Party
from cipherseg.protocols.scoring.secure_sum import messages as sm
from cipherseg.protocols.scoring.secure_sum.centre import SecureSumCentre
from cipherseg.protocols.scoring.secure_sum.manager import SecureSumManager
from cipherseg.protocols.scoring.secure_sum.owner import SecureSumOwner
from cipherseg.schemes.threshold import JointPublicKey


class ThresholdSecureSum:
    """Secure aggregation for FedAvg under the threshold scheme: ``agg(vectors)`` returns
    ``Σ vectors`` (fixed point, 10^-``decimals``), each vector encrypted by its own owner.

    ``seed`` fixes the common reference string (reproducible runs); key shares always come
    from the OS CSPRNG. See :mod:`cipherseg.protocols.scoring.secure_sum` for the sequence and
    what each party learns.

    Examples
    --------
    >>> agg = ThresholdSecureSum(3, seed=b"0123456789abcdef")
    >>> agg([np.array([1.0]), np.array([2.0]), np.array([-0.5])]).tolist()
    [2.5]
    >>> agg.manager.party_id, [o.party_id for o in agg.owners]
    (0, [1, 2, 3])
    """

    def __init__(self, n_owners: int, *, decimals: int = 6, seed: bytes | None = None) -> None:
        if not isinstance(n_owners, int) or n_owners < 2:
            raise ParameterError(f"secure aggregation needs at least 2 owners, got {n_owners!r}")
        self.n_owners = n_owners
        self.decimals = decimals
        self.manager = SecureSumManager(range(1, n_owners + 1), decimals=decimals,
                                        crs_seed=seed)
        self.centre = SecureSumCentre()
        self.owners = [SecureSumOwner(i) for i in range(1, n_owners + 1)]
        self._parties: dict[str, Party] = {self.manager.name: self.manager,
                                           self.centre.name: self.centre}
        self._parties.update({o.name: o for o in self.owners})
        self.traffic = Traffic()
        self.calls = 0
        self.seconds = 0.0
        self._deliver((self.manager.name, self.manager.start()))
        if not (self.manager.ready and self.public_key is not None):
            raise ProtocolError("secure sum: the key set-up did not complete")

    @property
    def public_key(self) -> JointPublicKey | None:
        return self.manager.public_key

    def __call__(self, vectors: Sequence[npt.ArrayLike]) -> npt.NDArray[np.float64]:
        if len(vectors) != self.n_owners:
            raise ValidationError(f"expected one vector per owner ({self.n_owners}), got "
                                  f"{len(vectors)}")
        arrays = [np.asarray(v, dtype=np.float64).ravel() for v in vectors]
        if len({a.size for a in arrays}) != 1:
            raise ValidationError("every owner must send a vector of the same length")
        for a in arrays:  # refuse before any owner contributes: a round is all or nothing
            sm.encode(a, self.decimals)
        started = time.perf_counter()
        # Each owner encrypts its own vector (at its node); then the messages flow.
        self._deliver(*[(o.name, o.contribute(a)) for o, a in zip(self.owners, arrays,
                                                                  strict=True)])
        rounds = self.manager.totals
        if not rounds or max(rounds) != self.calls + 1:
            raise ProtocolError("secure sum: the round ended without a total")
        result = rounds[self.calls + 1]
        for o in self.owners:
            if not np.array_equal(o.totals.get(self.calls + 1, np.empty(0)), result):
                raise ProtocolError(f"secure sum: {o.name} did not receive the round's total")
        self.calls += 1
        self.seconds += time.perf_counter() - started
        return result.copy()

    def _deliver(self, *initial: tuple[str, Outgoing]) -> None:
        deliver(self._parties, [(src, dst, m) for src, out in initial for dst, m in out],
                self.traffic)

    @property
    def bytes_to_centre(self) -> int:
        """Bytes of the owners' contributions so far."""
        return int(self.traffic.received[sm.CENTRE]["Contribution"])

    @property
    def bytes_partial_decryptions(self) -> int:
        """Bytes of the owners' partial decryptions so far (the manager's stays with it)."""
        return int(self.traffic.received[sm.MANAGER]["Partial"])

    def report(self) -> dict[str, Any]:
        return {"aggregation": "threshold secure aggregation (multiparty RLWE, N=8192, "
                               f"{self.n_owners} owners + manager)",
                "secure_sums": self.calls, "bytes_to_centre": self.bytes_to_centre,
                "bytes_partial_decryptions": self.bytes_partial_decryptions,
                "secure_aggregation_seconds": self.seconds}
