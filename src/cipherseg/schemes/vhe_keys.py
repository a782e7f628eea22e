"""The VHE key holder's side: key generation, secret-key encryption, decryption, key material.

Only the data owner imports this module; the compute centre works with
:mod:`cipherseg.schemes.vhe` (parameters, ciphertexts, key-switching matrices). The scheme is
broken all the same — see :mod:`cipherseg.schemes.vhe_attack` — so this split documents who is
*meant* to hold what, not a guarantee.

Randomness comes from numpy's PCG64 seeded from the operating system's CSPRNG unless a
generator is passed (tests, reproducible experiments). That is adequate for reproducing the
original experiments; nothing makes this scheme fit to protect data.

>>> import numpy as np
>>> from cipherseg.schemes.vhe import VHEContext, VHEParams
>>> params = VHEParams.for_workload(3, 16)
>>> key = VHESecretKey.generate(params, rng=np.random.default_rng(7))
>>> pk = key.encryption_key()                      # public: anyone can encrypt with it
>>> c = VHEContext(params).public_encrypt(pk, [[5, -6, 7]])
>>> key.decrypt(c)
array([[ 5, -6,  7]])
"""

from __future__ import annotations

import secrets

import numpy as np
import numpy.typing as npt

from cipherseg.errors import CiphertextError, EncodingError, ParameterError
from cipherseg.schemes.vhe import (
    _IDENTITY_ID,
    Array,
    KeySwitchKey,
    VHECiphertexts,
    VHEContext,
    VHEParams,
    _as_int_array,
    _check_plaintext,
    _max_abs,
)


def default_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy generator: the one given, one seeded with an int, or one seeded by the OS."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(secrets.randbits(128) if rng is None else rng)


class VHESecretKey:
    """``S = [I, T]`` with ``T`` uniform modulo q; the data owner's key.

    Parameters are fixed at :meth:`generate`; ``plain_dim`` defaults to ``params.dim`` (a
    key of another dimension serves as the output key of a linear transformation).

    >>> import numpy as np
    >>> from cipherseg.schemes.vhe import VHEParams
    >>> key = VHESecretKey.generate(VHEParams.for_workload(2, 8), rng=np.random.default_rng(0))
    >>> key.decrypt(key.encrypt([[3, -4]]))
    array([[ 3, -4]])
    """

    def __init__(self, params: VHEParams, t: Array, key_id: bytes,
                 rng: np.random.Generator) -> None:
        self.params = params
        self.ctx = VHEContext(params)
        self._t = t  # (plain_dim, m)
        self.key_id = key_id
        self.plain_dim = int(t.shape[0])
        self._rng = rng

    def __repr__(self) -> str:  # never show key material
        return (f"VHESecretKey(plain_dim={self.plain_dim}, secret_dim={self.params.secret_dim}, "
                f"ciphertext_bits={self.params.ciphertext_bits}, id={self.key_id.hex()[:8]}…)")

    @classmethod
    def generate(cls, params: VHEParams, *, plain_dim: int | None = None,
                 rng: np.random.Generator | int | None = None) -> VHESecretKey:
        """A fresh key for ``plain_dim``-entry plaintexts (default ``params.dim``)."""
        gen = default_rng(rng)
        dim = params.dim if plain_dim is None else int(plain_dim)
        if dim < 1:
            raise ParameterError(f"plain_dim must be >= 1, got {dim}")
        ctx = VHEContext(params)
        t = ctx.ring.random((dim, params.secret_dim), gen)
        key_id = gen.bytes(16)
        if key_id == _IDENTITY_ID:  # pragma: no cover - probability 2^-128
            key_id = b"\x01" * 16
        return cls(params, t, key_id, gen)

    # --- matrices ---------------------------------------------------------------------------
    def secret_matrix(self) -> Array:
        """``S = [I, T]`` as residues (key material: never log or send it)."""
        ring = self.ctx.ring
        eye = ring.from_signed(np.eye(self.plain_dim, dtype=np.int64))
        return np.concatenate([eye, self._t], axis=1)

    def _switch_matrix(self, source: Array, source_id: bytes, g_norm: int,
                       g: npt.NDArray[np.int64] | None) -> KeySwitchKey:
        """``M = [S_src* − T·A + E; A]`` from the source key ``source`` to this key."""
        ring, p = self.ctx.ring, self.params
        if source.shape[0] != self.plain_dim:
            raise ParameterError(
                f"the source key has {source.shape[0]} rows; this target key has "
                f"{self.plain_dim}"
            )
        s_star = ring.bit_expand_key(source)
        width = s_star.shape[1]
        a = ring.random((p.secret_dim, width), self._rng)
        e = ring.from_signed(self._rng.integers(-p.noise_bound, p.noise_bound + 1,
                                                size=(self.plain_dim, width)))
        top = ring.sub(ring.add(s_star, e), ring.matmul(self._t, a))
        return KeySwitchKey(np.concatenate([top, a], axis=0), source_id, self.key_id,
                            int(source.shape[1]), self.plain_dim, g_norm, g)

    def encryption_key(self) -> KeySwitchKey:
        """The key-switching matrix from ``I`` to this key: a public encryption key."""
        eye = self.ctx.ring.from_signed(np.eye(self.plain_dim, dtype=np.int64))
        return self._switch_matrix(eye, _IDENTITY_ID, 1, None)

    def key_switch_key(self, target: VHESecretKey) -> KeySwitchKey:
        """Key-switching matrix from this key to ``target`` (same plaintext dimension)."""
        return target._switch_matrix(self.secret_matrix(), self.key_id, 1, None)

    def linear_transform_key(self, g: npt.ArrayLike, target: VHESecretKey | None = None
                             ) -> KeySwitchKey:
        """Key-switching matrix from ``G·S`` to ``target``: turns ``Enc(x)`` into ``Enc(G·x)``.

        ``target`` defaults to this key when ``G`` is square; otherwise pass a key with
        ``plain_dim = G.shape[0]`` (the output key).
        """
        gm = _as_int_array(g)
        if gm.ndim != 2 or gm.shape[1] != self.plain_dim:
            raise ParameterError(
                f"G must be an integer matrix with {self.plain_dim} columns, got shape {gm.shape}"
            )
        if target is None:
            if gm.shape[0] != self.plain_dim:
                raise ParameterError("a non-square G needs an output key (target=...)")
            target = self
        ring = self.ctx.ring
        gs = ring.matmul(ring.from_signed(gm), self.secret_matrix())
        g_norm = int(np.max(np.sum(np.abs(gm.astype(object)), axis=1))) if gm.size else 0
        return target._switch_matrix(gs, self.key_id, g_norm, np.asarray(gm, dtype=np.int64))

    # --- encryption ---------------------------------------------------------------------------
    def encrypt(self, x: npt.ArrayLike, *, noise: npt.ArrayLike | None = None) -> VHECiphertexts:
        """Secret-key encryption of integer vectors (rows of ``x``): ``c = [w·x + e − T·r; r]``.

        ``noise`` fixes ``e`` instead of sampling it uniformly in ``[-B, B]``; it may go up to
        the parameters' worst-case noise (to test the decryption bound).
        """
        p, ring = self.params, self.ctx.ring
        xs = _as_int_array(x)
        if xs.ndim == 1:
            xs = xs[None, :]
        if xs.ndim != 2 or xs.shape[1] != self.plain_dim:
            raise EncodingError(
                f"expected plaintext rows of {self.plain_dim} integers, got shape {xs.shape}"
            )
        _check_plaintext(xs, p)
        n = xs.shape[0]
        if noise is None:
            e = ring.from_signed(self._rng.integers(-p.noise_bound, p.noise_bound + 1,
                                                    size=xs.shape))
            bound = p.noise_bound
        else:
            en = _as_int_array(noise)
            bound = _max_abs(en)
            if bound > p.worst_noise:
                raise ParameterError(
                    f"explicit noise {bound} exceeds the parameters' worst case {p.worst_noise}"
                )
            e = ring.from_signed(np.broadcast_to(en, xs.shape))
        r = ring.random((n, p.secret_dim), self._rng)
        wx = ring.mul_scalar(ring.from_signed(xs), p.w)
        top = ring.sub(ring.add(wx, e), ring.matmul(r, self._t.T))
        return VHECiphertexts(np.concatenate([top, r], axis=1), self.key_id, self.plain_dim,
                              bound, p.max_plaintext)

    def decrypt(self, c: VHECiphertexts) -> Array:
        """``round(centred(S·c) / w)`` for every ciphertext of the batch (int64 or Python ints)."""
        if c.key_id != self.key_id:
            raise CiphertextError("these ciphertexts are under another key")
        if c.data.shape[-1] != self.plain_dim + self.params.secret_dim:
            raise CiphertextError("ciphertext length does not match this key")
        return decode(self.ctx, c.data, self._t, self.plain_dim)


def decode(ctx: VHEContext, data: Array, t: Array, plain_dim: int) -> Array:
    """Decrypt residues ``data`` (``(..., d+m)``) with ``T``: anyone holding ``T`` can.

    Exposed so that :mod:`cipherseg.schemes.vhe_attack` decrypts with a *recovered* ``T``
    exactly as the owner does.
    """
    ring, w = ctx.ring, ctx.params.w
    flat = data.reshape(-1, data.shape[-1])
    sc = ring.add(flat[:, :plain_dim], ring.matmul(flat[:, plain_dim:], t.T))
    v = ring.to_signed(sc)
    if ring.native:
        with np.errstate(over="ignore"):
            out = (v + (w // 2)) // w
        out = out.astype(np.int64)
    else:
        out = (v + (w // 2)) // w
    return out.reshape(*data.shape[:-1], plain_dim)
