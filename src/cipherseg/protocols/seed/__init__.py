"""Protocol 4.4 — seed-mode k-means: the original system's design on VHE. **Leaks; broken.**

One module per party and one for the messages: ``messages`` (the sequence below, ``SPEC``),
``owner`` (:class:`~.owner.SeedDataOwner`, the key holder, client), ``centre``
(:class:`~.centre.SeedComputeCentre`, sans-IO, :mod:`cipherseg.protocols.party`), ``params``
(VHE parameters and the digit encoding both parties use) and ``run`` (both parties in this
process, for the estimator, the CLI and the experiments).

The data owner encrypts its customers' fixed-point integer features with Zhou–Wornell VHE
(:mod:`cipherseg.schemes.vhe`); the compute centre clusters them using only additions and
linear transformations, holding the **centroids in plaintext**. For reproduction and
comparison only (docs/architecture.md §4.4): use protocol 4.1 (``scheme="ckks"``) for real data.

Message sequence (owner = client, centre = server; versioned
:class:`~cipherseg.protocols.messages.Message` objects, ``PROTOCOL = "kmeans-seed"``)::

    SeedUpload(VHE params, Enc(x_i) for all customers,
               d linear-transformation keys G_f = e_f^T, S → S1)    → SeedUploadAck
        # the centre switches every Enc(x_i) to per-feature Enc(x_if) under S1, once
    SeedCentroids(plaintext centroids μ̃ = round(2^p·μ))            → SeedScores(Enc(μ̃_j^(t)·x_i))
        # μ̃ split into signed base-2^b digits μ̃^(t); Σ_f μ̃_jf^(t)·Enc(x_if): integer
        # combinations (additions) of the per-feature ciphertexts, one per digit and cluster
    SeedLabels(every customer's cluster)                            → SeedSums(Enc(Σ_{i∈j} x_i),
                                                                               cluster sizes)
    … repeated each Lloyd iteration …
    SeedClose                                                       → SeedCloseAck

The owner decrypts the digit scores, recombines ``μ̃_j·x_i = Σ_t 2^(b·t)·μ̃_j^(t)·x_i``
exactly, assigns each customer to ``argmin_j ‖μ̃_j‖² − 2^(p+1)·μ̃_j·x_i`` (the squared
distance up to the customer's own ``‖x_i‖²``, centroids on the grid ``2^-p`` of a plaintext
unit, p = 20 by default), decrypts the per-cluster sums and divides by the sizes, exactly as
scikit-learn's Lloyd iteration does (same loop, same convergence test, same relocation of
empty clusters). Labels therefore agree with :class:`sklearn.cluster.KMeans` from the same
initial centres except for points within ~2^-21 plaintext units of a boundary. The digit
split keeps the combination weights below ``2^b ≈ n/d``, so the VHE parameters are those the
cluster sums need anyway (64-bit arithmetic for 100 000 customers of 12-bit features).

Leakage (docs/architecture.md §1 terms) — **more than the table allows, by design of the original**:

* **Compute centre** learns every centroid of every iteration in plaintext (it holds them),
  the cluster of every customer (it needs the labels to add the right ciphertexts), hence
  the cluster sizes, the number of customers, features and iterations. Besides that, the
  scheme itself is broken: from the per-feature linear-transformation keys it receives, the
  centre recovers the owner's secret key with :func:`cipherseg.schemes.vhe_attack.
  recover_key_from_linear_transform_keys` and decrypts **every customer's features** — so in
  truth the centre learns everything. ``tests/security/test_vhe_attack.py`` does this.
* **Data owner** learns ``μ̃_j·x_i`` for each customer and cluster (functions of its own data)
  and everything it sent.
* **Merchant / others**: whatever the centre releases — and the centre holds the centroids.
"""
