"""Protocol 4.3 (encrypted scoring): its messages and party names.

The sequence and what each party learns are in :mod:`cipherseg.protocols.scoring`. Every
message is a versioned :class:`~cipherseg.protocols.messages.Message`; ``round`` is 0 for the
set-up and ``b + 1`` for block ``b``.

>>> from cipherseg.protocols.messages import Message
>>> m = ScoringReady(protocol_version=PROTOCOL_VERSION, session_id="s", round=0, n_blocks=2)
>>> Message.from_bytes(m.to_bytes()) == m
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import Message, define_protocol, register_message

PROTOCOL = "scoring"
PROTOCOL_VERSION = 1
SPEC = define_protocol(PROTOCOL, PROTOCOL_VERSION)
OWNER = "owner"
CENTRE = "centre"


@register_message
@dataclass(frozen=True, slots=True)
class ScoringSetup(Message):
    """Owner → centre: context, sizes and the model (plaintext or encrypted)."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    public_context: bytes = b""
    n_customers: int = 0
    n_features: int = 0
    weights: tuple[float, ...] = ()
    bias: float = 0.0
    encrypted_weights: tuple[bytes, ...] = ()
    encrypted_bias: bytes = b""
    sigmoid_coefficients: tuple[float, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class ScoringReady(Message):
    """Centre → owner: set-up accepted; ``n_blocks`` blocks of features expected."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    n_blocks: int = 0


@register_message
@dataclass(frozen=True, slots=True)
class EncryptedFeatures(Message):
    """Owner → centre: one ciphertext per feature for the customers of one block."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    block: int = 0
    n_rows: int = 0
    columns: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class EncryptedScores(Message):
    """Centre → owner: encrypted scores (and optional approximate probabilities) of a block."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    block: int = 0
    n_rows: int = 0
    scores: bytes = b""
    probabilities: bytes = b""


def check_version(m: Message) -> None:
    """Refuse a message of another protocol version (the centre speaks one)."""
    if m.protocol_version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"scoring protocol version {m.protocol_version} is not supported "
            f"(this centre speaks {PROTOCOL_VERSION})"
        )
