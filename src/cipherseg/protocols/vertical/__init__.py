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
    # alignment: DH-PSI (X25519) over the prime-order subgroup of Curve25519/Ed25519, ring
    H_i → H_i+1  PsiBlinded(origin i, hop 1, sorted H(x)^s_i)          … each holder blinds
    H_j → H_j+1  PsiBlinded(origin i, hop h+1, same order)             and passes on
    H_i-1 → H_i  PsiBlinded(origin i, hop m)       the list back, blinded by every a_j
                 (s_i = a_i for m = 2; for m ≥ 3 a one-time t_i, and H_i applies a_i/t_i)
    H_i → C      PsiTags(sorted tags)
    C → H_i      PsiResult(sorted intersection = the shared order);  C → M  Aligned(n)
    H_i → M      ScaleReport(e_i: |x| ≤ 2^e_i on its shared rows, in DP mode the bounds';
                             n and a SHA-256 digest of the intersection it was given)
    M → H_i      Scale(e = max e_i)        (after checking every holder got the same n rows)
    H_i → C      Upload(its columns / 2^e in the shared order, public-key CKKS, top level)
    C → M        Totals(Σ x_f over all customers, slot-summed)
    # k-means++ with secure selection (init="k-means++"), centres m = 1 … k
    M → C        InitStart                                    C picks record i_0 at random
    C → M        MaskedRecord(slot, x + R in that slot, 0 elsewhere; R uniform in ±2^24)
    M → C        NewCentre(x + R in every slot)               C subtracts R: Enc(c_m)
    C → M        Comparisons("init", m)  (m ≥ 2)   blinded pairwise differences, as below
    M → C        OneHots("init", m)       nearest of the m centres, padding slots 0
    C → M        ShuffledD2(ρ·D²(x), blocks permuted)   D² = Σ_j h_j·‖x − c_j‖²  (m = 1: ‖x − c_0‖²)
    M → C        Pick(shuffled block, slot)    sampled ∝ D²;  C un-permutes → MaskedRecord …
    # Lloyd iterations t = 0, 1, … (given/random init: M → C Centroids("lloyd", 0) first)
    C → M        Comparisons("lloyd", t): z = r·(‖x−c_j‖² − ‖x−c_l‖² − τ) per customer, j < l
    M → C        OneHots("lloyd", t): Enc(h_a + i·h_b), clusters 1…k−1 two per ciphertext
    C → M        Sums(t): Σ_x (h_a + i·h_b)(x)·x_f, slot-summed  (cluster 0: totals − rest)
    M → C        Centroids("lloyd", t+1)  (k·d ciphertexts), or Centroids("final") when the
                 shift is ≤ tol or max_iter is reached → Comparisons("final") → labels
    M → H_i      Result(centroids in input units, final labels in the shared order);  M → C Close

The comparisons are linear in x: with L_j = ‖c_j‖² − 2⟨x, c_j⟩, ‖x−c_j‖² − ‖x−c_l‖² =
L_j − L_l, so C needs no ‖x‖²: k·d ciphertext products and k relinearisations per block, then
one subtraction per pair. r is drawn per customer and pair, log-uniform in
[2^13, 2^(28 − log2(4d+1))] (2^13 – 2^23.6 for d = 5), from SHAKE-256 over a fresh 256-bit key
per task (the manager knows P in the padding slots, hence r there: a predictable generator
would give the rest away), and multiplied in as a plaintext encoded at scale 1 before the last
rescale (no level spent; the encoding error is real-valued and at most N/2 = 2^12 — measured
≤ 100 — so it perturbs r but never its sign). M labels each customer with the cluster that
wins most comparisons (the lowest index among equals): with τ = 10^-7 exact ties go to the
lower index.

CKKS: N = 8192, chain 60 | 50, 40 | 60 bits (210 ≤ 218: 128-bit HE standard), scale 2^40.
Uploads are fresh (k-means++ needs two products: ‖x−c‖², then the one-hot selection); Lloyd
works one prime lower and rescales its products by the 50-bit prime to 2^30, which leaves 29
bits of room for r·(P − τ) at the last level: comparisons already travel at the smallest
modulus of the chain, and a smaller one would cost sign correctness near ties (the last
rescale's rounding, about 2^11 at that scale, must stay below r·τ ≥ 2^13·10^-7·2^30). Holders
have only the public key (no relinearisation keys), so uploads are public-key ciphertexts,
which cannot be seeded: 2× the bytes of 4.1's symmetric, seeded uploads (about 350 kB per
4,096 values of a column). M's own encryptions (one-hots, centroids, k-means++ centres) are
symmetric and seeded. Lloyd one-hots use the complex slots for two clusters (cross-talk is the
imaginary CKKS noise, about 10^-8 per customer); comparisons do not: there, the noise of one
pair would be multiplied by r_a/r_b (up to 2^10.6) in the other.

Leakage (docs/architecture.md §1 terms; the table in ``docs/security.md``):

* **Compute centre**: sizes only — each holder's set size and the intersection size (m ≥ 3:
  the counts of every combination of sets), d_i, k, iterations, message sizes and timing —
  and which rows of the shared order k-means++ picked (it picks them; never their values).
  Every value it handles is encrypted under M's key or is a PSI tag random to it; centroids
  go to it encrypted, so it never sees them, nor labels, sizes of clusters or D².
* **Manager**: n; each holder's e_i (the power of two above its largest |value| on the shared
  rows; without DP); per customer (a pseudonymous row of the shared order) and iteration the
  ranking of its distances to the centroids (signs of the comparisons, hence the label) and
  |z| = r·|P|, which places |P| only within a factor 2^10.6 (d = 5): [|z|/2^23.6, |z|/2^13] —
  per comparison; rounds whose centroids barely move repeat nearly the same P under fresh r,
  so after T such rounds the factor is about 2^(21.2/(T + 1)) (2^3.5 for T = 5), and the
  pairs of one row (P_jl = P_jm + P_ml) narrow it further; per iteration the per-cluster sums
  (Totals once) and sizes, hence the centroids; in k-means++ the ranking among the centres so
  far, ρ·D² (one secret factor ρ ≤ 2^12 per step) in secretly permuted blocks (slot order
  inside a block kept, as in 4.1; the last, shorter block is recognisable by its size), the
  slot (row mod 4096) of each pick, and the picked records' d values under a ±2^24 uniform
  mask (statistical distance about d·2^-24 per pick). It never sees a holder's ciphertexts,
  an identifier, a PSI point, or the k-means++ records themselves. Over iterations the
  rankings are half-space constraints (⟨x, c_l − c_j⟩ vs a constant): they localise each row
  inside the intersection of its Voronoi cells — inherent in revealing rankings.
* **Each holder**: the intersection (which of its customers are shared) and the other
  holders' set sizes; the common exponent e (without DP: a few bits about the largest |value|
  among all holders' shared rows); at the end the released centroids, the number of
  iterations and its shared customers' final labels. Never per-iteration labels, centroids or
  aggregates, nor another holder's columns.
* **Non-collusion** assumed: M with C (C holds every column encrypted under M's key: together
  they decrypt everything); M with a holder learns M's leakage plus that holder's data, not
  another holder's columns; C with a holder learns the PSI membership of that holder's
  customers in each other set (m ≥ 3) and nothing encrypted. TLS between parties.
* **The manager is trusted to follow the protocol.** Nobody can check what it encrypts: a
  manager that chose its centroids to test features against thresholds of its choosing, or
  one-hots selecting single customers, would learn holders' values (within max_iter rounds,
  which the centre enforces). The table's ceiling is that of a manager that is curious, not
  lying.
* **Checks** (parties may lie): M decrypts only messages of the expected type, stage and
  index, each once, of the expected count; it refuses *unopened* any ciphertext whose level,
  scale or size is not the one the protocol gives that value (``session.decrypted_shapes``:
  an upload passed off as comparisons, say); after decrypting, it refuses values no honest
  centre produces: comparisons beyond 2^29; a "sum" or "total" whose slots differ by more than
  10^-4 (a slot sum holds its value in every slot: a column added to a sum is refused);
  sums beyond their count, totals beyond n; a masked record with anything outside the picked
  slot; D² outside [0, 2^12·(4d+1)]; masked values beyond the mask; anything not finite.
  It stops if holders report different intersections or another n than C announced. C checks
  counts, levels, senders and max_iter; holders check the intersection contains only their
  own tags, the scale, and the result's shape (a result one holder refuses is withdrawn from
  the others). PSI points need no check (X25519: torsion is cleared by the clamped scalar,
  small-order points refused). What these do **not** stop: C can always bring any linear
  function of the encrypted columns to the level and scale of a comparison, a sum or a D²
  (it holds the public and rotation keys), e.g. a column scaled below the slot-spread bound,
  or one customer's value broadcast to every slot. M then decrypts it (which is M and C
  colluding), and what M releases carries it: the final labels (comparison bits) and centroids
  (sums) to the holders, the k-means++ picks (a sample ∝ C's chosen weights, about one bit of
  C's choosing per pick) to C itself. Against a centre that substitutes well-formed ciphertexts
  the model is honest-but-curious with these checks on top.
* **Released values carry CKKS noise**: the final centroids are decrypted aggregates in double
  precision; C knows their ciphertexts. Key recovery from decryptions (Li–Micciancio) needs
  about N such values with their ciphertexts; a run releases k·d. With DP the Gaussian noise
  floods it.
* **Empty clusters** keep their centre (M knows no distances to relocate them as
  scikit-learn does; after k-means++, where M never saw the centres, an empty cluster takes
  the largest cluster's centroid) and are logged; results then differ from scikit-learn's.
* **DP** (``dp_epsilon``): data-independent init, a fixed number of iterations, holders clip
  into public bounds; M adds Gaussian noise (σ·√2·C on sums, σ·√2 on counts; σ calibrated by
  ``dp-accounting``'s RDP accountant for max_iter releases) before computing every
  iteration's centroids, so the released centroids are (ε, δ)-DP per customer. M itself sees
  the exact aggregates (it is trusted for DP); a customer's own label is released to the
  holders of that customer. The guarantee assumes the centre's sums are honest: a substituted
  "sum" (above) is not a sum of clipped records and has another sensitivity.

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
