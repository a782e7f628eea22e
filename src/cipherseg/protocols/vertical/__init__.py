"""Protocol 4.5 — vertical k-means: holders of different *columns* of the same customers.

Parties: feature holders H_1…H_m (m ≥ 2; e.g. the mall with RFM, a merchant with its loyalty
data), each with its customers' identifiers and columns in clear; the compute centre C (no
key; all ciphertext work); the manager M (holds the CKKS secret key; decrypts signs and
aggregates; releases the model). Modules: :mod:`~.psi` (alignment), :mod:`~.messages`,
:mod:`~.holder`, :mod:`~.centre`, :mod:`~.manager`, :mod:`~.session` (shared constants),
:mod:`~.runner` (in-process run), :mod:`~.estimator` (``VerticalKMeans``).

Message sequence (every message a versioned :class:`~cipherseg.protocols.messages.Message`)::

    M → C, H_i   Setup(holders, d_i, k, init, max_iter, tol, DP budget, PSI label, public key;
                       C's copy also relinearisation + power-of-two rotation keys)
    # alignment: DH-PSI over the prime-order subgroup of Ed25519, ring order
    H_i → H_i+1  PsiBlinded(origin i, hop 1, sorted H(x)^a_i)          … each holder blinds
    H_j → H_j+1  PsiBlinded(origin i, hop h+1, same order)             and passes on
    H_i-1 → H_i  PsiBlinded(origin i, hop m)       the list back, blinded by every a_j
    H_i → C      PsiTags(sorted tags)
    C → H_i      PsiResult(sorted intersection = the shared order);  C → M  Aligned(n)
    H_i → M      ScaleReport(e_i: |x| ≤ 2^e_i on its shared rows; in DP mode: the bounds')
    M → H_i      Scale(e = max e_i)
    H_i → C      Upload(its columns / 2^e in the shared order, public-key CKKS, top level)
    C → M        Totals(Σ x_f over all customers, slot-summed)
    # k-means++ with secure selection (init="k-means++"), centres m = 1 … k
    M → C        InitStart                                    C picks record i_0 at random
    C → M        MaskedRecord(slot, x + R, R uniform in ±2^24)
    M → C        NewCentre(x + R in every slot)               C subtracts R: Enc(c_m)
    C → M        Comparisons("init", m)  (m ≥ 2)   blinded pairwise differences, as below
    M → C        OneHots("init", m)       nearest of the m centres, padding slots 0
    C → M        ShuffledD2(ρ·D²(x), blocks permuted)   D² = Σ_j h_j·‖x − c_j‖²  (m = 1: ‖x − c_0‖²)
    M → C        Pick(shuffled block, slot)    sampled ∝ D²;  C un-permutes → MaskedRecord …
    # Lloyd iterations t = 0, 1, … (given/random init: M → C Centroids("lloyd", 0) first)
    C → M        Comparisons("lloyd", t): z = r·(‖x−c_j‖² − ‖x−c_l‖² − τ) per customer, j < l
    M → C        OneHots("lloyd", t): Enc(label = j) for j = 1…k−1
    C → M        Sums(t): Σ_x h_j(x)·x_f, slot-summed, j = 1…k−1  (cluster 0: totals − rest)
    M → C        Centroids("lloyd", t+1)  (k·d ciphertexts), or Centroids("final") when the
                 shift is ≤ tol or max_iter is reached → Comparisons("final") → labels
    M → H_i      Result(centroids in input units, final labels in the shared order);  M → C Close

The comparisons are linear in x: with L_j = ‖c_j‖² − 2⟨x, c_j⟩, ‖x−c_j‖² − ‖x−c_l‖² =
L_j − L_l, so C needs no ‖x‖²: k·d ciphertext products and k relinearisations per block, then
one subtraction per pair. r is drawn per customer and pair, log-uniform in
[2^13, 2^(28 − log2(4d+1))] (2^13 – 2^23.6 for d = 5), and multiplied in as a plaintext
encoded at scale 1 before the last rescale (no level spent; the encoding error, at most N/2 =
2^12, perturbs r but never its sign). M labels each customer with the cluster that wins most
comparisons (the lowest index among equals): with τ = 10^-7 exact ties go to the lower index.

CKKS: N = 8192, chain 60 | 50, 40 | 60 bits (210 ≤ 218: 128-bit HE standard), scale 2^40.
Uploads are fresh (k-means++ needs two products: ‖x−c‖², then the one-hot selection); Lloyd
works one prime lower and rescales its products by the 50-bit prime to 2^30, which leaves 29
bits of room for r·(P − τ) at the last level. Holders have only the public key, so uploads
are public-key ciphertexts, which cannot be seeded: 2× the bytes of 4.1's symmetric, seeded
uploads (about 350 kB per 4,096 values of a column). M's own encryptions (one-hots, centroids,
k-means++ centres) are symmetric and seeded.

Leakage (ARCHITECTURE §1 terms; the table in ``docs/security.md``):

* **Compute centre**: sizes only — each holder's set size and the intersection size (m ≥ 3:
  the counts of every combination of sets), d_i, k, iterations, message sizes and timing —
  and which rows of the shared order k-means++ picked (it picks them; never their values).
  Every value it handles is encrypted under M's key or is a PSI tag random to it; centroids
  go to it encrypted, so it never sees them, nor labels, sizes of clusters or D².
* **Manager**: n; per customer (a pseudonymous row of the shared order) and iteration the
  ranking of its distances to the centroids (signs of the comparisons, hence the label) and
  |z| = r·|P|, which places |P| only within a factor 2^10.6 (d = 5): [|z|/2^23.6, |z|/2^13];
  per iteration the per-cluster sums (Totals once) and sizes, hence the centroids; in
  k-means++ the ranking among the centres so far, ρ·D² (one secret factor ρ ≤ 2^12 per step)
  in secretly permuted blocks (slot order inside a block kept, as in 4.1), and the picked
  records under a ±2^24 uniform mask (statistical distance about 2^-24). It never sees a
  holder's ciphertexts, an identifier, a PSI point, or the k-means++ records themselves.
  Over iterations the rankings are half-space constraints (⟨x, c_l − c_j⟩ vs a constant):
  they localise each row inside the intersection of its Voronoi cells — inherent in
  revealing rankings.
* **Each holder**: the intersection (which of its customers are shared) and the other
  holders' set sizes; at the end the released centroids and its shared customers' final
  labels. Never per-iteration labels, centroids or aggregates, nor another holder's columns.
* **Non-collusion** assumed: M with C (C holds every column encrypted under M's key: together
  they decrypt everything); M with a holder learns M's leakage plus that holder's data, not
  another holder's columns; C with a holder learns the PSI membership of that holder's
  customers in each other set (m ≥ 3) and nothing encrypted. TLS between parties.
* **Checks** (parties may lie): M decrypts only messages of the expected type, stage and
  index, each once, of the expected count and shape, and refuses values no honest centre
  produces (comparisons beyond 2^29, sums beyond their count, totals beyond n, D² outside
  [0, 2^12·(4d+1)], masked values beyond the mask, anything not finite); C checks counts,
  levels and senders; holders check every PSI point (prime-order subgroup), that the
  intersection contains only their own tags, the scale, and the result's shape. These catch
  faults and crude lies, not substitutions inside those ranges (a malicious C could
  substitute its own ciphertexts and, colluding with a holder that later sees the labels,
  learn comparison bits): the model is honest-but-curious with those checks on top.
* **Empty clusters** keep their centre (M knows no distances to relocate them as
  scikit-learn does; after k-means++, where M never saw the centres, an empty cluster takes
  the largest cluster's centroid) and are logged; results then differ from scikit-learn's.
* **DP** (``dp_epsilon``): data-independent init, a fixed number of iterations, holders clip
  into public bounds; M adds Gaussian noise (σ·√2·C on sums, σ·√2 on counts; σ calibrated by
  ``dp-accounting``'s RDP accountant for max_iter releases) before computing every
  iteration's centroids, so the released centroids are (ε, δ)-DP per customer. M itself sees
  the exact aggregates (it is trusted for DP); a customer's own label is released to the
  holders of that customer.

>>> from cipherseg.protocols.vertical import VerticalKMeans
>>> VerticalKMeans(n_clusters=3).n_clusters
3
"""

from __future__ import annotations

from typing import Any

__all__ = ["VerticalKMeans", "run_vertical"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the centre's modules must not load the manager's key-holding code.
    if name == "VerticalKMeans":
        from cipherseg.protocols.vertical.estimator import VerticalKMeans

        return VerticalKMeans
    if name == "run_vertical":
        from cipherseg.protocols.vertical.runner import run_vertical

        return run_vertical
    raise AttributeError(name)
