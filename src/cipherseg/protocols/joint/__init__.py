"""Protocol 4.2 — joint k-means: several data owners, a compute centre, a manager, threshold keys.

Parties: owners O_1…O_n (each holds its customers' features in plaintext and a secret key
share), the manager M (key share; fuses decryptions, releases the model), the compute centre C
(no key; relays key material and ciphertexts). The joint key has n+1 shares (the owners' and
the manager's), so no coalition of owners without the manager, and no manager without every
owner, can decrypt.

Modules: :mod:`~.messages`, one module per party — :mod:`~.owner`, :mod:`~.manager`,
:mod:`~.centre` — :mod:`~.session` (what the parties share and check), :mod:`~.runner`
(in-process and separate-process runs) and :mod:`~.estimator` (``JointKMeans``). The parties
run on the aggregation interface of :mod:`cipherseg.schemes.base`: threshold RLWE
(:class:`~cipherseg.schemes.threshold.ThresholdAggregation`), or for the benchmarks' baseline
no encryption (:class:`~cipherseg.schemes.plain.PlainAggregation`: no keys, so no key
generation and no partial decryptions — the contributions go to the manager only).

Message sequence, version 2 (:mod:`~.messages`; every message is a versioned
:class:`~cipherseg.protocols.messages.Message` carrying session id and round)::

    M → C, O_i   Setup(params, CRS seed, owners, k, d, decimals, init, max_iter, tol, DP budget)
    O_i, M → C   KeyCommitment(H(session, i, p_i))           # collective key generation, committed
    C → O_i, M   KeyCommitments(all)     each party checks its own is there unchanged, then …
    O_i, M → C   PublicKeyShare(p_i)     … reveals p_i; C checks each against its commitment
    C → O_i, M   KeyShares(p_0…p_n)      each party checks every p_j against its commitment and
                                         its own p_i unchanged, builds pk = Σ p_i
    O_i → M      KeyReady(fingerprint of pk)               M checks that everyone has the same pk
    # each aggregation round (purpose "d2" or "stats"):
    O_i → C      EncryptedVector(purpose, ct_i)
    O_i → M      ContributionDigest(purpose, digest of ct_i)
    M → O_i      ContributionDigests(purpose, digests of ct_1…ct_n)   once all n have reported
    C → O_i, M   Aggregate(purpose, ct_1…ct_n)
    O_i, M → M   Partial(purpose, h_i)   each key party checks every ct_j against its digest and
                                         the round's length, adds them and decrypts the sum —
                                         once per round and purpose, only for a round it took
                                         part in; M fuses
    # joint k-means++ (not in DP mode), for step j = 0 … k-1
    M → O_i      D2Request(j, centres c_0…c_{j-1})
                 a "d2" round: ct_i = Enc(D²_i total in O_i's own slots)        (j = 0: D² ≡ 1)
                 M learns the per-owner totals; samples owner i ∝ D²_i
    M → O_i      PickRequest(j)
    O_i → M      PickedRecord(j, x)                       a record of O_i sampled ∝ D²(x) inside O_i
    # Lloyd iterations r = 0, 1, …
    M → O_i      Centroids(r, c)
                 a "stats" round: ct_i = Enc(per-cluster sums and counts of O_i, fixed point)
                 M learns Σ sums, Σ counts → new centroids
    M → O_i      Final(n_iter, c)   when the centroids stop moving (or max_iter); M → C Close

Leakage per party (docs/architecture.md §1 terms; the table in ``docs/security.md``):

* **Compute centre**: the public schedule — number of owners, k, d, iterations, message sizes
  and timing. Every value it handles is encrypted under a key it has no share of; it never
  sees centroids, counts, sums, D² totals or records.
* **Manager**: per iteration the pooled per-cluster sums and counts (hence the centroids and
  cluster sizes of the pooled data); during k-means++ every owner's D² total (step 0: every
  owner's number of customers), which owner each initial centre comes from, and the k initial
  records themselves.
* **Each owner**: its own data; the released centroids of every iteration (and with its own
  contribution, the *other owners' pooled* per-cluster means); the k initial records (one may
  be its own), and whether it was sampled. Nothing per other owner beyond that.
* **Reconstruction risk**: per-iteration releases are exact without DP; differencing them
  across iterations, an owner (who knows its own contributions) can recover other owners'
  records when few records change clusters between iterations (a record moving alone is
  revealed exactly). The DP option (:mod:`cipherseg.protocols.dp`) adds Gaussian noise to
  every owner's contribution, so every release is (ε, δ)-DP per customer.

Threat model. Against an active (deviating) centre *or* an active manager — not both
colluding — a key party decrypts nothing but the sum of exactly every owner's genuine
contribution of a round it took part in, once: a contribution the centre substitutes does not
match the digest its owner reported to the manager (an honest manager), and an honest centre
relays the genuine contributions whatever digests a dishonest manager relays (the check then
fails and the session stops). Only the centre sends contributions to decrypt. No key party,
nor the centre, can pick its key share after seeing the others' (commitments), so the joint
secret is the sum of every party's independently chosen secret. Not covered: a centre and
manager that collude (they can impersonate the other owners to one owner: owners have no
channel to each other), a manager that picks the centroids it sends to shape the sums it
learns (centroids isolating one customer; only DP bounds this), a party that lies about its
own data, a party that withholds or corrupts its partial decryption (the fusion noise check
detects a random corruption, not an added multiple of Δ), and denial of service (any party
can stop the session).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> parts = [np.vstack([rng.normal(0, .1, (30, 2)), rng.normal(3, .1, (30, 2))])
...          for _ in range(2)]
>>> from cipherseg.protocols.joint import run_joint_kmeans
>>> result = run_joint_kmeans(parts, n_clusters=2, random_state=1)
>>> sorted(np.bincount(np.concatenate(result.labels)).tolist())
[60, 60]
"""

from __future__ import annotations

from typing import Any

__all__ = ["JointKMeans", "run_joint_kmeans"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the centre's modules must not load the key holders' code.
    if name == "JointKMeans":
        from cipherseg.protocols.joint.estimator import JointKMeans

        return JointKMeans
    if name == "run_joint_kmeans":
        from cipherseg.protocols.joint.runner import run_joint_kmeans

        return run_joint_kmeans
    raise AttributeError(name)
