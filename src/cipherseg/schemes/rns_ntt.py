"""Polynomial arithmetic in Z_q[X]/(X^N + 1) in RNS form with a vectorised negacyclic NTT.

A polynomial modulo q = p_1 · … · p_K is held as a ``uint64`` array of shape ``(..., K, N)``:
one row of residues per prime. Every prime is below 2^31 and ≡ 1 (mod 2N), so a product of two
residues fits in 64 bits and the negacyclic number-theoretic transform exists. The transform is
the merged-twiddle Cooley–Tukey / Gentleman–Sande pair (Longa & Naehrig 2016, as in SEAL): the
forward transform takes coefficients in natural order to evaluations in bit-reversed order, the
inverse takes them back, and a product is ``inverse(forward(a) * forward(b))``. Each of the
log2(N) stages is one numpy expression over all butterflies and all primes at once.

>>> import numpy as np
>>> ring = RnsRing(16, ntt_primes(16, 2))
>>> a = ring.from_int(np.array([1, 2] + [0] * 14))     # 1 + 2X
>>> b = ring.from_int(np.array([0] * 15 + [1]))        # X^15
>>> ring.to_int(ring.multiply(a, b))[[0, 15]]          # X^15 + 2X^16 = -2 + X^15
array([-2, 1], dtype=object)
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError

U64 = npt.NDArray[np.uint64]

# Largest |y| * N * p for which a float64 dot product of residues with small integers is exact.
_FLOAT_EXACT = 2**53
# Float FFT products: residues in balanced form (|r| <= p/2 < 2^30) times a ternary y. Every
# exact coefficient is below 2^30·N <= 2^43; Percival's (2003) round-off bound for a product of
# length N = 2^k, ||x||·||y||·ε·(9k + 2) <= 2^30·N·2^-53·(9k + 2), is below 0.12 for k <= 13, so
# rounding recovers the exact product. Measured: below 2^-13 on random inputs, 2^-8 on the
# worst case (constant p/2 times all ones). A result further than _FFT_MAX_ROUNDING from an
# integer raises.
_FFT_MAX_SMALL = 1
_FFT_MAX_ROUNDING = 2.0**-5
_MR_BASES = (2, 325, 9375, 28178, 450775, 9780504, 1795265022)


def is_prime(n: int) -> bool:
    """Deterministic Miller–Rabin for 64-bit integers.

    >>> is_prime(2147352577), is_prime(2147352579)
    (True, False)
    """
    if n < 2:
        return False
    for small in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % small == 0:
            return n == small
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for base in _MR_BASES:
        a = base % n
        if a == 0:
            continue
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def ntt_primes(n: int, count: int, bits: int = 31) -> tuple[int, ...]:
    """The ``count`` largest primes below 2^bits that are ≡ 1 (mod 2n), in decreasing order.

    >>> ntt_primes(8192, 2)
    (2147352577, 2147205121)
    """
    if n < 2 or n & (n - 1):
        raise ParameterError(f"the ring degree must be a power of two, got {n}")
    step = 2 * n
    p = ((1 << bits) - 2) // step * step + 1
    found: list[int] = []
    while len(found) < count:
        if p <= step:
            raise ParameterError(f"fewer than {count} NTT primes of {bits} bits for N={n}")
        if is_prime(p):
            found.append(p)
        p -= step
    return tuple(found)


def _powers(w: int, n: int, p: int) -> npt.NDArray[np.uint64]:
    """w^0 … w^(n-1) mod p, as an outer product of two short power tables."""
    block = 1 << ((n.bit_length() - 1 + 1) // 2)
    low = np.array([pow(w, j, p) for j in range(block)], dtype=np.uint64)
    step = pow(w, block, p)
    high = np.array([pow(step, i, p) for i in range(-(-n // block))], dtype=np.uint64)
    out: npt.NDArray[np.uint64] = ((high[:, None] * low[None, :]) % np.uint64(p)).ravel()[:n]
    return out


def _root_of_unity_2n(p: int, n: int) -> int:
    """A primitive 2n-th root of unity modulo p (the smallest one reached from g = 2, 3, …)."""
    exponent = (p - 1) // (2 * n)
    for g in range(2, p):
        psi = pow(g, exponent, p)
        if pow(psi, n, p) == p - 1:
            return psi
    raise ParameterError(f"no primitive {2 * n}-th root of unity modulo {p}")


class RnsRing:
    """Z_q[X]/(X^N + 1) with q the product of ``moduli``, residues in ``uint64``.

    Parameters
    ----------
    n:
        Ring degree N, a power of two.
    moduli:
        Distinct primes below 2^31, each ≡ 1 (mod 2N).

    Examples
    --------
    >>> import numpy as np
    >>> ring = RnsRing(8, ntt_primes(8, 1))
    >>> x = ring.from_int(np.arange(8))
    >>> bool((ring.inverse(ring.forward(x)) == x).all())
    True
    """

    def __init__(self, n: int, moduli: tuple[int, ...]) -> None:
        if n < 2 or n & (n - 1):
            raise ParameterError(f"the ring degree must be a power of two, got {n}")
        for p in moduli:
            if not (2 < p < 2**31) or (p - 1) % (2 * n) or not is_prime(p):
                raise ParameterError(
                    f"{p} is not an NTT-friendly prime below 2^31 for N={n} "
                    f"(need p ≡ 1 mod {2 * n})"
                )
        if len(set(moduli)) != len(moduli):
            raise ParameterError(f"the RNS moduli must be distinct, got {moduli}")
        self.n = n
        self.moduli = tuple(int(p) for p in moduli)
        self.k = len(moduli)
        self.q = functools.reduce(lambda x, y: x * y, self.moduli, 1)
        self._p = np.array(self.moduli, dtype=np.uint64)[:, None]  # (K, 1)
        logn = n.bit_length() - 1
        fwd = np.empty((self.k, n), dtype=np.uint64)
        inv = np.empty((self.k, n), dtype=np.uint64)
        n_inv = np.empty((self.k, 1), dtype=np.uint64)
        index = np.arange(n)
        reversed_index = np.zeros(n, dtype=np.int64)
        for b in range(logn):
            reversed_index |= ((index >> b) & 1) << (logn - 1 - b)
        for row, p in enumerate(self.moduli):
            psi = _root_of_unity_2n(p, n)
            fwd[row] = _powers(psi, n, p)[reversed_index]
            inv[row] = _powers(pow(psi, -1, p), n, p)[reversed_index]
            n_inv[row, 0] = pow(n, -1, p)
        # Stage s of the constant-geometry transform multiplies position i of the upper half by
        # psi_rev[2^s + (i mod 2^s)]: the twiddles of each stage, tiled to length N/2.
        half = n // 2
        self._fwd_stages = [
            np.ascontiguousarray(np.tile(fwd[:, 2**s:2**(s + 1)], (1, half >> s)))
            for s in range(logn)
        ]
        self._inv_stages = [
            np.ascontiguousarray(np.tile(inv[:, 2**s:2**(s + 1)], (1, half >> s)))
            for s in reversed(range(logn))
        ]
        self._n_inv = n_inv
        # Negacyclic float FFT of half length: x ↦ (x_j + i·x_{j+N/2})·ω^j, ω = exp(iπ/N).
        self._fold_twist = np.exp(1j * np.pi * np.arange(n // 2) / n)
        self._fold_twist_conj = self._fold_twist.conj()
        self._p_signed = np.array(self.moduli, dtype=np.int64)[:, None]
        # CRT reconstruction: x = sum_k r_k * c_k mod q, with c_k = (q/p_k) * ((q/p_k)^-1 mod p_k).
        self._crt = np.array(
            [(self.q // p) * pow(self.q // p, -1, p) % self.q for p in self.moduli], dtype=object
        )[:, None]

    # ---------------------------------------------------------------- conversions
    def from_int(self, values: npt.ArrayLike) -> U64:
        """Residues of signed integers (int64 or Python ints) of shape (..., N') → (..., K, N')."""
        x = np.asarray(values)
        if x.dtype == object:
            out = np.empty((*x.shape[:-1], self.k, x.shape[-1]), dtype=np.uint64)
            for row, p in enumerate(self.moduli):
                out[..., row, :] = np.vectorize(lambda v, p=p: int(v) % p, otypes=[np.uint64])(x)
            return out
        x = x.astype(np.int64, copy=False)
        signed_p = np.array(self.moduli, dtype=np.int64)[:, None]
        return (x[..., None, :] % signed_p).astype(np.uint64)

    def to_int(self, residues: U64) -> npt.NDArray[Any]:
        """Centred integers in (-q/2, q/2] (Python ints in an object array) from residues."""
        r = np.asarray(residues).astype(object)
        x = (r * self._crt).sum(axis=-2) % self.q
        half = self.q // 2
        centred: npt.NDArray[Any] = np.where(x > half, x - self.q, x)
        return centred

    # ---------------------------------------------------------------- element-wise arithmetic
    def add(self, a: U64, b: U64) -> U64:
        s = a + b
        out: U64 = np.minimum(s, s - self._p)
        return out

    def sub(self, a: U64, b: U64) -> U64:
        d = a + (self._p - b)
        out: U64 = np.minimum(d, d - self._p)
        return out

    def neg(self, a: U64) -> U64:
        d = self._p - a
        out: U64 = np.minimum(d, d - self._p)
        return out

    def mul(self, a: U64, b: U64) -> U64:
        """Element-wise product modulo each prime (in the NTT domain: polynomial product)."""
        return (a * b) % self._p

    def mul_scalar(self, a: U64, scalar: int) -> U64:
        """Multiply by one integer (reduced modulo each prime)."""
        s = np.array([scalar % p for p in self.moduli], dtype=np.uint64)[:, None]
        return (a * s) % self._p

    # ---------------------------------------------------------------- transforms
    def forward(self, a: U64) -> U64:
        """Negacyclic NTT along the last axis: natural order in, bit-reversed order out.

        Constant-geometry form: every stage reads the two contiguous halves and writes the
        even/odd positions, so each stage is a handful of long numpy passes. Values are kept
        lazily below c·p (c <= 4, so a residue times a twiddle stays below 2^64) and reduced
        when needed.
        """
        x = np.array(a, dtype=np.uint64, copy=True)
        y = np.empty_like(x)
        half = self.n // 2
        w = np.empty((*x.shape[:-1], half), dtype=np.uint64)
        p = self._p
        c = 1
        for twiddles in self._fwd_stages:
            if c > 4:
                np.remainder(x, p, out=x)
                c = 1
            lo, hi = x[..., :half], x[..., half:]
            even, odd = y[..., 0::2], y[..., 1::2]
            np.multiply(hi, twiddles, out=w)
            np.remainder(w, p, out=w)
            np.add(lo, w, out=even)
            np.subtract(lo, w, out=odd)
            np.add(odd, p, out=odd)
            c += 1
            x, y = y, x
        np.remainder(x, p, out=x)
        return x

    def inverse(self, a: U64) -> U64:
        """Inverse negacyclic NTT: bit-reversed evaluations in, natural-order coefficients out."""
        x = np.array(a, dtype=np.uint64, copy=True)
        y = np.empty_like(x)
        half = self.n // 2
        w = np.empty((*x.shape[:-1], half), dtype=np.uint64)
        p = self._p
        c = 1
        for twiddles in self._inv_stages:
            if c > 2:
                np.remainder(x, p, out=x)
                c = 1
            even, odd = x[..., 0::2], x[..., 1::2]
            lo, hi = y[..., :half], y[..., half:]
            np.add(even, odd, out=lo)
            np.subtract(even, odd, out=w)
            np.add(w, self._p * np.uint64(c), out=w)  # in (0, 2cp): times a twiddle < 2^64
            np.multiply(w, twiddles, out=hi)
            np.remainder(hi, p, out=hi)
            c *= 2
            x, y = y, x
        np.multiply(x, self._n_inv, out=x)
        np.remainder(x, p, out=x)
        return x

    def multiply(self, a: U64, b: U64) -> U64:
        """Negacyclic product of two polynomials given by coefficients."""
        return self.inverse(self.mul(self.forward(a), self.forward(b)))

    # ---------------------------------------------------------------- products with small polys
    def small_head_matrix(self, small: npt.NDArray[np.int64], length: int
                          ) -> npt.NDArray[np.float64]:
        """The first ``length`` rows of the negacyclic matrix of y: row j, column k holds
        y[j-k] if k <= j else -y[N+j-k], so that (a·y)_j = Σ_k row_j[k] · a_k."""
        n = self.n
        if small.shape != (n,) or not 1 <= length <= n:
            raise ParameterError(f"need a length-{n} polynomial and 1 <= length <= {n}")
        # f(d) = y[d] for d >= 0 and -y[N+d] for d < 0, stored reversed: row j is a window.
        g = np.concatenate([-small[1:], small]).astype(np.float64)[::-1]
        windows = np.lib.stride_tricks.sliding_window_view(g, n)
        return np.ascontiguousarray(windows[n - length:n][::-1])

    def multiply_small_head(self, a: U64, small: npt.NDArray[np.int64], length: int,
                            matrix: npt.NDArray[np.float64] | None = None) -> U64:
        """The first ``length`` coefficients of a · y, with y a polynomial with small integer
        coefficients (|y| · N · max p < 2^53), as one exact float64 contraction.

        ``a`` has shape (K, N) (coefficients), ``small`` shape (N,); the result has shape
        (K, length). Used where only a few coefficients are ever read (truncated ciphertext
        bodies and partial decryptions): far cheaper than a full transform.
        """
        # Every partial sum is an integer below 2^53, so float64 adds it exactly in any order.
        if int(np.abs(small).max(initial=0)) * self.n * max(self.moduli) >= _FLOAT_EXACT:
            raise ParameterError("multiply_small_head needs |y| * N * p < 2^53")
        if matrix is None:
            matrix = self.small_head_matrix(small, length)
        prod = a.astype(np.float64) @ matrix.T
        out: U64 = (prod.astype(np.int64) % self._p_signed).astype(np.uint64)
        return out

    # ---------------------------------------------------------------- float FFT products
    def _fold(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.complex128]:
        half = self.n // 2
        out: npt.NDArray[np.complex128] = (x[..., :half] + 1j * x[..., half:]) * self._fold_twist
        return out

    def fft_prepare(self, a: U64) -> npt.NDArray[np.complex128]:
        """Transform a fixed polynomial (residues, shape (K, N)) once for
        :meth:`fft_multiply_small`: balanced residues, folded and twisted, FFT of length N/2."""
        signed = a.astype(np.int64)
        balanced = np.where(signed > self._p_signed // 2, signed - self._p_signed, signed)
        out: npt.NDArray[np.complex128] = np.fft.fft(self._fold(balanced.astype(np.float64)),
                                                     axis=-1)
        return out

    def fft_multiply_small(self, prepared: npt.NDArray[np.complex128],
                           small: npt.NDArray[np.int64],
                           addend: npt.NDArray[np.int64] | None = None) -> U64:
        """a · y (+ e) for a prepared a and a ternary y (coefficients in {-1, 0, 1}), exactly.

        The evaluations of a and y at the roots ω^(4k+1) of X^N + 1 (ω = exp(iπ/N)) are one
        FFT of length N/2 of the folded, twisted coefficients; their product, transformed back
        and rounded, is the exact integer product of the balanced residues of a with y, reduced
        modulo each prime. Several times faster than the NTT path for the encryption product
        a·u; ``small`` of shape (..., N) gives a result of shape (..., K, N). ``addend`` (small
        integers shaped like ``small``, e.g. an encryption's error) is added before the
        reduction, saving a conversion to residues and a modular addition.
        """
        if int(np.abs(small).max(initial=0)) > _FFT_MAX_SMALL:
            raise ParameterError(f"fft_multiply_small needs |y| <= {_FFT_MAX_SMALL}")
        y = np.fft.fft(self._fold(np.asarray(small, dtype=np.float64)), axis=-1)
        # In place from here on: these (..., K, N/2) temporaries are large enough that fresh
        # allocations cost page faults comparable to the arithmetic.
        z = prepared * y[..., None, :]
        np.fft.ifft(z, axis=-1, out=z)
        z *= self._fold_twist_conj
        half = self.n // 2
        real = np.empty((*z.shape[:-1], self.n))  # unfold: (..., K, N)
        real[..., :half] = z.real
        real[..., half:] = z.imag
        rounded = np.rint(real)
        np.subtract(real, rounded, out=real)
        np.abs(real, out=real)
        if float(real.max(initial=0.0)) > _FFT_MAX_ROUNDING:
            raise ParameterError("float FFT product lost precision; use multiply()")
        combined = rounded.astype(np.int64)
        if addend is not None:
            combined += np.asarray(addend, dtype=np.int64)[..., None, :]
        np.remainder(combined, self._p_signed, out=combined)  # now in [0, p)
        out: U64 = combined.view(np.uint64)
        return out
