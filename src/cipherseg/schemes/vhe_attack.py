"""Breaking VHE with public material only (after Bogos, Gaspoz & Vaudenay, 2018).

Zhou–Wornell VHE hands the evaluator key-switching matrices ``M = [S_src* − T'·A + E; A]``:
the public encryption key (from ``I`` to ``S``) and the linear-transformation keys (from
``G·S`` to an output key ``S'``). Bogos, Gaspoz and Vaudenay ("Cryptanalysis of a homomorphic
encryption scheme", Cryptography and Communications 10, 2018) showed that this material
gives the secret key away. This module implements that break on our implementation:

1. **Target key from the known columns (an LWE instance of tiny dimension).** Where the
   source key is known — all of ``I`` for the encryption key, the ``G`` block of
   ``G·S = [G, G·T]`` for a linear-transformation key — the top rows give
   ``u = S_src* − M_top = T'·A − E (mod q)`` with ``A`` public (the bottom rows of ``M``) and
   ``E`` small. Each row of ``T'`` is the secret of an LWE instance with only ``m``
   (``secret_dim``) unknowns and ``(source columns)·ℓ`` samples. A lattice of dimension
   ``2m + 13`` (Kannan's embedding, reduced with FLINT's LLL) yields ``E`` and hence ``T'``
   exactly; the residual ``u − T'·A`` over *all* samples is then checked to be within the
   public noise bound.
2. **Source key from a linear-transformation key.** With ``T'`` known,
   ``M_top + T'·A = (G·S)* + E``; its ``G·T`` columns hold ``2^b·(G·T)_ij + e``. The column
   with ``2^b > 2B`` gives ``G·T`` modulo ``2^(ℓ−b)`` by rounding, the ``b = 0`` column the
   remaining top bits, so ``G·T`` is exact; ``T`` follows from ``G`` (for the seed-mode
   per-feature keys ``G = e_f^T``, ``T`` row by row).
3. **Plaintexts.** Any ciphertext under a recovered key decrypts like the owner's:
   ``x = round(centred(c_top + T·c_bot) / w)``.

Only public parameters (q, w, the noise bound B, dimensions) and public matrices are used.

>>> import numpy as np
>>> from cipherseg.schemes.vhe import VHEContext, VHEParams
>>> from cipherseg.schemes.vhe_keys import VHESecretKey
>>> params = VHEParams.for_workload(3, 16)
>>> owner = VHESecretKey.generate(params, rng=np.random.default_rng(11))
>>> pk = owner.encryption_key()                    # published by the owner
>>> c = VHEContext(params).public_encrypt(pk, [[120, -7, 3]])  # someone else's data
>>> stolen = recover_key_from_encryption_key(params, pk)
>>> decrypt_with(params, stolen, c)
array([[120,  -7,   3]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import flint
import numpy as np
import numpy.typing as npt

from cipherseg.errors import CipherSegError, CiphertextError, ParameterError
from cipherseg.schemes.vhe import (
    _IDENTITY_ID,
    Array,
    KeySwitchKey,
    VHECiphertexts,
    VHEContext,
    VHEParams,
)
from cipherseg.schemes.vhe_keys import decode


class AttackFailed(CipherSegError):
    """The lattice step found no candidate consistent with the public noise bound."""


@dataclass(frozen=True, slots=True)
class RecoveredKey:
    """A secret matrix ``T`` recovered from public material, for the key ``key_id``."""

    key_id: bytes
    t: Array  # (plain_dim, m) residues
    lattice_dim: int

    @property
    def plain_dim(self) -> int:
        return int(self.t.shape[0])

    def __repr__(self) -> str:
        return f"RecoveredKey(id={self.key_id.hex()[:8]}…, shape={self.t.shape})"


# ----------------------------------------------------------------------------------------------
# Integer linear algebra modulo 2^k (Python integers; the matrices here are tiny)
# ----------------------------------------------------------------------------------------------
def _inverse_mod(a: list[list[int]], q: int) -> list[list[int]]:
    """Inverse of a square matrix modulo q = 2^k (exists iff its determinant is odd)."""
    n = len(a)
    aug = [[x % q for x in row] + [int(i == j) for j in range(n)] for i, row in enumerate(a)]
    for col in range(n):
        piv = next((r for r in range(col, n) if aug[r][col] % 2 == 1), None)
        if piv is None:
            raise ParameterError("matrix is not invertible modulo q (even determinant)")
        aug[col], aug[piv] = aug[piv], aug[col]
        inv = pow(aug[col][col], -1, q)
        aug[col] = [(x * inv) % q for x in aug[col]]
        for r in range(n):
            if r != col and aug[r][col]:
                f = aug[r][col]
                aug[r] = [(x - f * y) % q for x, y in zip(aug[r], aug[col], strict=True)]
    return [row[n:] for row in aug]


def _pivots_mod2(cols: list[list[int]], need: int) -> list[int] | None:
    """Indices of ``need`` columns independent over GF(2) (greedy), or None."""
    basis: list[int] = []  # bitmasks in echelon form
    chosen: list[int] = []
    for idx, col in enumerate(cols):
        v = sum((x & 1) << i for i, x in enumerate(col))
        for b in basis:
            v = min(v, v ^ b)
        if v:
            basis.append(v)
            basis.sort(reverse=True)
            chosen.append(idx)
            if len(chosen) == need:
                return chosen
    return None


def _centred(v: int, q: int) -> int:
    v %= q
    return v - q if v >= q // 2 else v


def solve_lwe_row(a: Sequence[Sequence[int]], u: Sequence[int], q: int, bound: int
                  ) -> tuple[list[int], int]:
    """Find ``t`` with ``u − t·A ∈ [−bound, bound]^N (mod q)``: primal attack by embedding.

    ``a`` is ``m × N`` (public), ``u`` has ``N`` entries. Returns ``t`` and the lattice
    dimension used. Raises :class:`AttackFailed` if no solution is found.

    >>> q = 2**40
    >>> rng = np.random.default_rng(0)
    >>> A = rng.integers(0, q, size=(2, 30)).tolist()
    >>> t = [123456789, 987654321]
    >>> e = rng.integers(-3, 4, size=30).tolist()
    >>> u = [(t[0] * A[0][j] + t[1] * A[1][j] - e[j]) % q for j in range(30)]
    >>> solve_lwe_row(A, u, q, 3)[0] == t
    True
    """
    m = len(a)
    n_all = len(u)
    cols_all = [[int(a[i][j]) for i in range(m)] for j in range(n_all)]
    n = min(n_all, 2 * m + 12)
    while True:
        piv = _pivots_mod2(cols_all[:n], m)
        if piv is not None:
            result = _embedding(cols_all[:n], [int(x) for x in u[:n]], piv, q, bound)
            if result is not None and _residual_ok(cols_all, u, result, q, bound):
                return result, n + 1
        if n >= n_all:
            raise AttackFailed(
                f"no key consistent with noise bound {bound} in {n_all} samples (m={m})"
            )
        n = min(n_all, n + m + 8)


def _embedding(cols: list[list[int]], u: list[int], piv: list[int], q: int, bound: int
               ) -> list[int] | None:
    m, n = len(piv), len(cols)
    rest = [j for j in range(n) if j not in piv]
    a_p = [[cols[j][i] for j in piv] for i in range(m)]  # m × m
    a_r = [[cols[j][i] for j in rest] for i in range(m)]  # m × (n − m)
    inv = _inverse_mod(a_p, q)
    # A' = A_P^{-1}·A_R: rows of [I, A'] span {t·A} together with q·Z on the rest.
    a_prime = [[sum(inv[i][k] * a_r[k][j] for k in range(m)) % q for j in range(n - m)]
               for i in range(m)]
    emb = max(1, bound)
    order = piv + rest
    rows: list[list[int]] = []
    for i in range(m):
        rows.append([int(i == j) for j in range(m)] + a_prime[i] + [0])
    for j in range(n - m):
        rows.append([0] * m + [q if k == j else 0 for k in range(n - m)] + [0])
    rows.append([u[j] for j in order] + [emb])
    reduced = flint.fmpz_mat(rows).lll()
    for r in range(reduced.nrows()):
        last = int(reduced[r, n])
        if abs(last) != emb:
            continue
        sign = 1 if last > 0 else -1
        e = [-sign * int(reduced[r, c]) for c in range(n)]  # in `order`
        if max(abs(x) for x in e) > bound:
            continue
        # t·A_P = u_P + e_P  →  t = (u_P + e_P)·A_P^{-1}
        v = [(u[piv[i]] + e[i]) % q for i in range(m)]
        return [sum(v[k] * inv[k][i] for k in range(m)) % q for i in range(m)]
    return None


def _residual_ok(cols: list[list[int]], u: Sequence[int], t: list[int], q: int, bound: int
                 ) -> bool:
    for j, col in enumerate(cols):
        r = _centred(int(u[j]) - sum(ti * ci for ti, ci in zip(t, col, strict=True)), q)
        if abs(r) > bound:
            return False
    return True


# ----------------------------------------------------------------------------------------------
# The attack on key-switching matrices
# ----------------------------------------------------------------------------------------------
def _as_ints(a: Array) -> list[list[int]]:
    return [[int(x) for x in row] for row in np.asarray(a)]


def recover_target_key(params: VHEParams, key: KeySwitchKey, known_source: npt.ArrayLike
                       ) -> RecoveredKey:
    """Recover ``T'`` of ``key``'s *target* from the columns of the source key that are known.

    ``known_source`` is the first ``j`` columns of the source key (``r × j`` integers): all of
    ``I`` for the encryption key, ``G`` for a linear-transformation key.
    """
    ctx = VHEContext(params)
    ring, q, bits = ctx.ring, params.q, params.ciphertext_bits
    known = ring.from_signed(np.asarray(known_source))
    r, j_known = known.shape
    if r != key.target_dim or j_known > key.source_cols or j_known == 0:
        raise ParameterError("known_source does not fit this key-switching matrix")
    width = j_known * bits
    s_star = _as_ints(ring.bit_expand_key(known))  # r × width
    top = _as_ints(key.top[:, :width])
    a = _as_ints(key.matrix[key.target_dim:, :width])  # m × width
    t_rows: list[list[int]] = []
    dim = 0
    for i in range(r):
        u = [(s_star[i][c] - top[i][c]) % q for c in range(width)]
        t_i, dim = solve_lwe_row(a, u, q, params.noise_bound)
        t_rows.append(t_i)
    t = ring.from_signed(np.array(t_rows, dtype=object))
    return RecoveredKey(key.target_id, t, dim)


def recover_key_from_encryption_key(params: VHEParams, public_key: KeySwitchKey
                                    ) -> RecoveredKey:
    """The owner's ``T`` from its public encryption key (the key-switching matrix from I)."""
    if public_key.source_id != _IDENTITY_ID:
        raise ParameterError("not an encryption key (key-switching matrix from I)")
    eye = np.eye(public_key.target_dim, dtype=np.int64)
    return recover_target_key(params, public_key, eye)


def _exact_from_gadget(v0: int, vb: int, b: int, q_bits: int, bound: int) -> int:
    """``Y`` from ``v0 = Y + e0`` and ``vb = 2^b·Y + eb`` (mod 2^k), ``|e| ≤ bound < 2^(b−1)``."""
    q = 1 << q_bits
    low_mod = 1 << (q_bits - b)
    low = ((vb + (1 << (b - 1))) % q) >> b  # Y mod 2^(k−b)
    e0 = _centred(v0 - low, low_mod)
    return (v0 - e0) % q


def recover_key_from_linear_transform_keys(params: VHEParams, keys: Sequence[KeySwitchKey]
                                           ) -> tuple[RecoveredKey, dict[bytes, RecoveredKey]]:
    """The *source* key ``T`` (and every output key ``T'``) from linear-transformation keys.

    Needs the keys' transformations ``G`` (public: the evaluator asked for them) to have, all
    together, ``d`` rows forming a matrix invertible modulo q (e.g. the unit vectors of the
    seed-mode per-feature keys).
    """
    if not keys:
        raise ParameterError("no linear-transformation keys given")
    ctx = VHEContext(params)
    ring, q, bits, bound = ctx.ring, params.q, params.ciphertext_bits, params.noise_bound
    src = keys[0].source_id
    d = keys[0].source_cols - params.secret_dim
    m = params.secret_dim
    b = max(1, (2 * bound).bit_length())  # 2^(b−1) > bound
    if bits - b - 1 <= bound.bit_length():
        raise AttackFailed("noise too large relative to q for exact gadget rounding")
    targets: dict[bytes, RecoveredKey] = {}
    g_rows: list[list[int]] = []
    y_rows: list[list[int]] = []
    for key in keys:
        if key.source_id != src or key.g is None:
            raise ParameterError("all keys must be linear-transformation keys of one source")
        if key.target_id not in targets:
            targets[key.target_id] = recover_target_key(params, key, key.g)
        t_out = _as_ints(targets[key.target_id].t)  # r × m
        top = key.top
        a = key.matrix[key.target_dim:]
        for i in range(key.target_dim):
            y_row = []
            for j in range(m):
                col0 = (d + j) * bits
                vals = []
                for col in (col0, col0 + b):
                    ta = sum(t_out[i][k] * int(a[k, col]) for k in range(m))
                    vals.append((int(top[i, col]) + ta) % q)
                y_row.append(_exact_from_gadget(vals[0], vals[1], b, bits, bound))
            g_rows.append([int(x) for x in key.g[i]])
            y_rows.append(y_row)
    piv = _pivots_mod2(g_rows, d) if len(g_rows) >= d else None
    # _pivots_mod2 treats its input as columns; rows of G here play that role.
    if piv is None:
        raise AttackFailed("the transformations G do not determine T (rank < d modulo 2)")
    inv = _inverse_mod([g_rows[p] for p in piv], q)
    y_sub = [y_rows[p] for p in piv]
    t = [[sum(inv[i][k] * y_sub[k][j] for k in range(d)) % q for j in range(m)]
         for i in range(d)]
    dim = max(r.lattice_dim for r in targets.values())
    return RecoveredKey(src, ring.from_signed(np.array(t, dtype=object)), dim), targets


def decrypt_with(params: VHEParams, key: RecoveredKey, c: VHECiphertexts) -> Array:
    """Decrypt ciphertexts with a recovered key — exactly the owner's decryption."""
    if c.key_id != key.key_id:
        raise CiphertextError("these ciphertexts are under another key than the recovered one")
    return decode(VHEContext(params), c.data, key.t, key.plain_dim)
