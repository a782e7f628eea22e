"""Protocol 4.1 — outsourced k-means: one data owner, one compute centre, CKKS.

One module per party and one for the messages:

=================== ===========================================================================
``messages``        the versioned messages below and the protocol's descriptor (``SPEC``)
``owner``           :class:`~.owner.DataOwner`, the key holder; drives the sequence as client
``centre``          :class:`~.centre.ComputeCentre`, sans-IO, no secret key (import contract)
``owner_ops``       the owner's block work (decrypt, argmin, re-encrypt) for its executor
``owner_checks``    what the owner refuses in what it decrypts
``centre_ops``      the centre's block work on ciphertexts for its executor
=================== ===========================================================================

Both parties follow :mod:`cipherseg.protocols.party`: the centre answers each message with one
message to its sender; the owner talks to it through a :class:`~cipherseg.protocols.party.Link`
(in this process, a process pipe or HTTP — :mod:`cipherseg.transport`,
:mod:`cipherseg.hosting`) and checks the type of every reply.

Message sequence (owner = client, centre = server; every message is a versioned
:class:`~cipherseg.protocols.messages.Message`)::

    Upload(public context, column-packed feature blocks)      → UploadAck
    # k-means++ with secure selection
    InitStart                                                 → MaskedRecord(slot, x+R)
    NewCentre(enc broadcast centre)        (m < k centres)    → Scores(s_1..s_{m-1} per block)
    MinScores(enc min(0, s) per block)                        → ShuffledD2(r·D², permuted blocks)
    Pick(shuffled block, slot)                                → MaskedRecord(slot, x+R)
    NewCentre(enc broadcast centre)        (k-th centre)      → InitDone(enc init centres)
    # Lloyd iterations
    Centroids(enc broadcast centroids, or none = the init ones) → Scores(s_1..s_{k-1} per block)
    Assignments(enc one-hots for clusters 1..k-1 per block)     → Sums(per-slot sums, counts)
    Close                                                       → CloseAck

Leakage (docs/architecture.md §1 terms):

* **Compute centre** learns the number of customers and features, the block size, the number
  of clusters and iterations (the public schedule), and the index of every record picked as an
  initial centre (it picks the first one itself and un-shuffles the owner's later picks). It
  never sees a plaintext value: features, distances, scores, labels, centroids and counts all
  stay encrypted under the owner's key; it holds no secret key.
* **Data owner** (key holder) learns, each iteration, the k−1 score differences
  ``δ_j − δ_0`` of every customer, hence the labels, the centroids and the cluster sizes — all
  functions of its own data. During k-means++ it sees D² values multiplied by a secret factor
  and with the blocks in a secret order (so it cannot tell which block a value belongs to; the
  slot order inside a block is kept — a slot-level shuffle would need 18 MB of rotation keys),
  the slot number (record index modulo 4096) of each picked record, and that record's values
  under a uniform additive mask of ±2^24 (statistical hiding of the normalised value, |x| ≤ 1,
  to about 2^-24). It learns the initial centres themselves at ``InitDone`` (its own records).
* Malicious behaviour is out of scope: both parties are honest-but-curious; the transport must
  authenticate the parties (TLS) against third parties. The owner refuses decrypted replies
  outside the ranges an honest centre produces (:mod:`cipherseg.protocols.outsourced.owner_checks`):
  that catches faults and crude tampering, not wrong values inside those ranges.
"""
