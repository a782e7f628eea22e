"""The HomomorphicEncryption.org security standard's bounds, shared by every RLWE scheme here.

Albrecht et al., "Homomorphic Encryption Security Standard" (Nov. 2018), recommended
parameters for uniform ternary secrets and error width σ ≈ 3.2, classical security: the
largest log2(q) (including any special prime) for each ring degree N and security level —
the values SEAL enforces as ``SEAL_HE_STD_PARMS_*_TC``. CKKS
(:mod:`cipherseg.schemes.ckks`) and the threshold scheme (:mod:`cipherseg.schemes.threshold`)
refuse parameter sets above the 128-bit bound.

>>> HE_STANDARD_MAX_LOG_Q[128][8192], HE_STANDARD_MAX_LOG_Q[192][8192]
(218, 152)
"""

from __future__ import annotations

HE_STANDARD_MAX_LOG_Q: dict[int, dict[int, int]] = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}
"""``HE_STANDARD_MAX_LOG_Q[security_level][N]``: the largest log2(q) at that level."""

__all__ = ["HE_STANDARD_MAX_LOG_Q"]
