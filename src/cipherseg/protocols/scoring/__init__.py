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

Leakage (docs/architecture.md §1 terms):

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

Modules: :mod:`~.messages` (the four messages, party names), :mod:`~.owner`
(:class:`ScoringOwner`: encodes, encrypts, decrypts; any key holder offering ``public_bytes``,
``encrypt_to_bytes`` and ``decrypt_bytes``), :mod:`~.centre` (:class:`ScoringCentre`: public
context only, refuses a context that can decrypt), :mod:`~.sigmoid` (the cubic both agree
on).

>>> import numpy as np
>>> from cipherseg.schemes.ckks import CkksParams
>>> from cipherseg.schemes.ckks_keys import CkksSecretContext
>>> keys = CkksSecretContext.generate(CkksParams.for_depth(1))
>>> from cipherseg.protocols.party import PartyLink
>>> owner = ScoringOwner(keys, weights=[0.5, -2.0], bias=0.5)
>>> link = PartyLink(ScoringCentre(), sender=OWNER)  # or a process pipe, or HTTP
>>> result = owner.run(np.array([[1.0, 0.0], [2.0, 1.0]]), link)
>>> [round(float(s), 4) for s in result.scores]
[1.0, -0.5]
"""

from cipherseg.protocols.scoring.centre import ScoringCentre
from cipherseg.protocols.scoring.messages import (
    CENTRE,
    OWNER,
    PROTOCOL,
    PROTOCOL_VERSION,
    EncryptedFeatures,
    EncryptedScores,
    ScoringReady,
    ScoringSetup,
)
from cipherseg.protocols.scoring.owner import OwnerKeys, ScoringOwner, ScoringResult
from cipherseg.protocols.scoring.sigmoid import (
    SIGMOID_DEPTH,
    SigmoidApproximation,
    sigmoid_params,
)

__all__ = [
    "CENTRE",
    "OWNER",
    "PROTOCOL",
    "PROTOCOL_VERSION",
    "SIGMOID_DEPTH",
    "EncryptedFeatures",
    "EncryptedScores",
    "OwnerKeys",
    "ScoringCentre",
    "ScoringOwner",
    "ScoringReady",
    "ScoringResult",
    "ScoringSetup",
    "SigmoidApproximation",
    "sigmoid_params",
]
