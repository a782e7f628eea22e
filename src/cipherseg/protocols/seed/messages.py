"""Protocol 4.4's messages and descriptor; the sequence: :mod:`cipherseg.protocols.seed`."""

from __future__ import annotations

from dataclasses import dataclass

from cipherseg.protocols.messages import Message, define_protocol, register_message

PROTOCOL = "kmeans-seed"
VERSION = 1
SPEC = define_protocol(PROTOCOL, VERSION)


@register_message
@dataclass(frozen=True, slots=True)
class SeedUpload(Message):
    PROTOCOL = PROTOCOL
    params_json: str = ""
    n_clusters: int = 0
    ciphertexts: bytes = b""  # (n, d + m) under S
    feature_keys: tuple[bytes, ...] = ()  # d linear-transformation keys e_f^T: S → S1


@register_message
@dataclass(frozen=True, slots=True)
class SeedUploadAck(Message):
    PROTOCOL = PROTOCOL
    n_samples: int = 0


@register_message
@dataclass(frozen=True, slots=True)
class SeedCentroids(Message):
    PROTOCOL = PROTOCOL
    centroid_bits: int = 0
    digit_bits: int = 0
    centroids: tuple[int, ...] = ()  # k × d, row-major, units of 2^-p plaintext units


@register_message
@dataclass(frozen=True, slots=True)
class SeedScores(Message):
    PROTOCOL = PROTOCOL
    n_digits: int = 0
    scores: bytes = b""  # (n, n_digits · k, 1 + m) under S1: Enc(μ̃_j^(t) · x_i), digit-major


@register_message
@dataclass(frozen=True, slots=True)
class SeedLabels(Message):
    PROTOCOL = PROTOCOL
    labels: bytes = b""  # n little-endian int32


@register_message
@dataclass(frozen=True, slots=True)
class SeedSums(Message):
    PROTOCOL = PROTOCOL
    sums: bytes = b""  # (k, d + m) under S
    counts: tuple[int, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class SeedClose(Message):
    PROTOCOL = PROTOCOL


@register_message
@dataclass(frozen=True, slots=True)
class SeedCloseAck(Message):
    PROTOCOL = PROTOCOL
