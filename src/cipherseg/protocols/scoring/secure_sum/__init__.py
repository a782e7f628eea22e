"""Threshold secure aggregation (protocol 4.3's joint training): every owner's vector encrypted
under a joint key, only the sum decrypted.

Joint training — FedAvg of logistic regression across data owners
(:func:`cipherseg.analytics.federated.fedavg_logistic`) — sums the owners' vectors (their
standardisation moments, then per round ``n_k·w_k`` and ``n_k``) with this protocol.

Parties (threshold scheme of Mouchet et al., PETS 2021; ids as in protocol 4.2): the manager
M (party id 0, the FedAvg server), owners O_1 … O_n (ids 1 … n, n ≥ 2, n + 1 ≤ 7), and the
compute centre C (no key). Each key party holds its own key share only, generated on its own
node from the OS CSPRNG. Modules: :mod:`~.messages` (messages, names, the fixed-point codec),
:mod:`~.session` (set-up and joint key, shared by the key parties), :mod:`~.owner`,
:mod:`~.centre`, :mod:`~.manager`, :mod:`~.runner` (every party in this process:
:class:`ThresholdSecureSum`, the aggregator FedAvg calls).

Message sequence (every message a versioned :class:`~cipherseg.protocols.messages.Message`,
protocol ``secure-sum`` version 1)::

    M → C, O_i   Setup(parameters, CRS seed, owner ids, decimals)
    M, O_i → C   PublicKeyShare(party id, p_i = −a·s_i + e_i)
    C → M, O_i   KeyShares(every p_i)       each builds the joint key, checking its own share
    O_i → M      KeyReady(fingerprint of the joint key it built)
    M → O_i      Ready                      (all fingerprints equal, M's included)
    for each sum r = 1, 2, …:
      O_i → C    Contribution(r, length, Enc(limbs of x_i))     x_i fixed point, 10^decimals,
                                                                two signed 36-bit limbs
      O_i → M    ContributionDigest(r, digest of that ciphertext)
      C → O_i    Aggregate(r, length, A = Σ_i Enc(x_i))
      C → M      Aggregate(r, length, A, the n contributions)
      M → O_i    Approved(r, digest of A)   M checked: each contribution is the one its owner
                                            committed to, and A is their sum
      O_i → M    Partial(r, s_i·c1(A) + smudging noise)   only for the approved A, once a round
      M → O_i    Total(r, Σ_i x_i)                        M fuses its own partial with the owners'

Leakage (docs/architecture.md §1 terms; the table in ``docs/security.md``):

* **Compute centre** — the number of owners, the vector lengths, message sizes and timing.
  Every value it handles is encrypted under the joint key (RLWE, N = 8192, 128-bit).
* **Manager and owners** — each round's total (in FedAvg: the pooled moments, the total count
  and ``Σ n_k w_k``, i.e. the new global model, which FedAvg releases anyway); never one
  owner's vector, since decrypting needs every party's partial decryption (smudged with
  2^B uniform noise so that partials reveal nothing beyond the sum). The manager also holds
  each owner's ciphertext (to check the sum): under the joint key, it cannot open one alone.

Threat model: semi-honest parties as in protocol 4.2 (all must take part: n-out-of-n), plus a
centre that may lie. What the parties check: the set-up (owner ids, parameters, party count),
who sends what, the session, round numbers, lengths and limb counts, each party's own share
unchanged in the relayed keys, equal joint-key fingerprints before anything is encrypted, and
— against a centre passing one owner's ciphertext (or a sum with contributions left out or
replaced by its own encryptions) off as the round's sum — that the aggregate is the sum of
exactly the ciphertexts the owners committed to (digests sent by the owners to the manager,
checked by the manager; each owner decrypts only the ciphertext the manager approved, once a
round; partials are bound to its digest). Not stopped: a centre and a manager that collude
(the manager could approve a substituted sum), which would need authenticated owner-to-owner
channels.

>>> import numpy as np
>>> agg = ThresholdSecureSum(2, seed=b"0123456789abcdef")
>>> agg([np.array([1.5, -2.0]), np.array([0.25, 1e9])]).tolist()
[1.75, 999999998.0]
"""

from cipherseg.protocols.scoring.secure_sum.centre import SecureSumCentre
from cipherseg.protocols.scoring.secure_sum.manager import SecureSumManager
from cipherseg.protocols.scoring.secure_sum.owner import SecureSumOwner
from cipherseg.protocols.scoring.secure_sum.runner import ThresholdSecureSum

__all__ = ["SecureSumCentre", "SecureSumManager", "SecureSumOwner", "ThresholdSecureSum"]
