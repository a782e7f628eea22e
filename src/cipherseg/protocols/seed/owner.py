"""The data owner of protocol 4.4: holds the VHE keys and drives the sequence as client.

The sequence and the leakage: :mod:`cipherseg.protocols.seed`.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ProtocolError
from cipherseg.progress import Progress
from cipherseg.protocols.lloyd import update_centres
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Link
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
    DEFAULT_CENTROID_BITS,
    digit_bits_for,
    recombine,
    round_centroids,
)
from cipherseg.schemes.vhe import (
    VHE_INSECURE_WARNING,
    VHEParams,
)
from cipherseg.schemes.vhe_keys import VHESecretKey, default_rng

R = TypeVar("R", bound=Message)

LEAKAGE_SEED = {
    "compute_centre": "EVERYTHING: the plaintext centroids of every iteration and every "
                      "customer's cluster by design, and - because VHE's linear-transformation "
                      "keys reveal the secret key - every customer's features",
    "data_owner": "mu_j . x_i for every customer and cluster (functions of its own data)",
    "warning": VHE_INSECURE_WARNING,
}


@dataclass(frozen=True, slots=True)
class SeedKMeansResult:
    """Outcome of :func:`run_seed_kmeans` (centres and inertia in plaintext integer units)."""

    labels: npt.NDArray[np.int64]
    centers: npt.NDArray[np.float64]
    init_centers: npt.NDArray[np.float64]
    n_iter: int
    inertia: float
    report: dict[str, Any]


class SeedDataOwner:
    """Client side of the seed mode: holds the VHE keys and the plaintext data."""

    def __init__(self, params: VHEParams, *, centroid_bits: int = DEFAULT_CENTROID_BITS,
                 rng: np.random.Generator | int | None = None) -> None:
        self.params = params
        self.centroid_bits = centroid_bits
        self._rng = default_rng(rng)

    def run(self, x: npt.NDArray[np.int64], init_centers: npt.NDArray[np.float64],
            link: Link, *, max_iter: int, tol: float,
            progress: Progress | None = None) -> SeedKMeansResult:
        notify = progress or (lambda stage, done, total: None)
        n, d = x.shape
        k = init_centers.shape[0]
        p = self.centroid_bits
        b = digit_bits_for(n, d)
        seconds: dict[str, float] = defaultdict(float)
        session = uuid.uuid4().hex
        rounds = iter(range(1, 2**62))

        def request(message_type: type[Message], expect: type[R], **fields: Any) -> R:
            """The next message of the session; the centre's reply must be an ``expect``."""
            message = message_type(protocol_version=VERSION, session_id=session,
                                   round=next(rounds), **fields)
            return link.request(message, expect=expect)

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
        ack = request(SeedUpload, SeedUploadAck, **upload)
        if ack.n_samples != n:
            raise ProtocolError(f"the compute centre acknowledged {ack.n_samples} customers; "
                                f"{n} were uploaded")
        seconds["centre_transform"] += time.perf_counter() - t

        x_obj = x.astype(np.float64)

        def assign(centers: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
            mu = round_centroids(centers, p)
            t0 = time.perf_counter()
            reply = request(SeedCentroids, SeedScores, centroid_bits=p, digit_bits=b,
                            centroids=tuple(int(v) for v in mu.reshape(-1)))
            seconds["centre_scores"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            digit_scores = out_key.decrypt(ctx.ciphertexts_from_bytes(reply.scores))[..., 0]
            seconds["decrypt"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            dots = recombine(digit_scores.reshape(n, reply.n_digits, k), b)
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
            sums_reply = request(SeedLabels, SeedSums, labels=labels.astype("<i4").tobytes())
            seconds["centre_sums"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            sums = key.decrypt(ctx.ciphertexts_from_bytes(sums_reply.sums))  # (k, d) exact
            seconds["decrypt"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            new_centers = update_centres(x_obj, labels, centers, sums,
                                         np.array(sums_reply.counts, dtype=np.int64))
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
        request(SeedClose, SeedCloseAck)
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
            "bytes_to_centre": link.stats.bytes_to_server,
            "bytes_to_owner": link.stats.bytes_to_client,
            "leakage": LEAKAGE_SEED,
        }
        return SeedKMeansResult(labels=labels, centers=centers,
                                init_centers=np.asarray(init_centers, dtype=np.float64),
                                n_iter=it + 1, inertia=inertia, report=report)


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
