"""Versioned protocol messages and their byte format.

A message is a ``@dataclass(frozen=True, slots=True)`` subclass of :class:`Message` with the
envelope fields ``protocol_version``, ``session_id`` and ``round``. Fields typed ``bytes`` or
``tuple[bytes, ...]`` (ciphertexts) travel as length-prefixed blobs; every other field must be
JSON-serialisable (ints, floats, strings, lists of them). Messages travel in the envelope of
:mod:`cipherseg.wire` (magic ``CSMSG``, format version 1, no checksum: the ciphertexts inside
carry their own)::

    "CSMSG" | u16 format version | u32 header length | JSON header | u32 blob count | blobs

The JSON header carries the message type and the scalar fields; each blob is u64 length +
bytes. Unknown message types, unknown protocol versions and malformed bytes are refused with
:class:`~cipherseg.errors.ProtocolError`.

Each protocol declares itself once with :func:`define_protocol` — its wire name, the version
it sends and the versions it reads — before registering its messages; a message is parsed
only if its ``protocol_version`` is one its protocol reads. Bumping a protocol's version is a
one-line change in its descriptor.

>>> from dataclasses import dataclass
>>> DOC = define_protocol("doc", version=1)
>>> @register_message
... @dataclass(frozen=True, slots=True)
... class Ping(Message):
...     PROTOCOL = "doc"
...     payload: tuple[bytes, ...] = ()
...     note: str = ""
>>> m = Ping(protocol_version=1, session_id="s1", round=0, payload=(b"ab",), note="hi")
>>> Message.from_bytes(m.to_bytes()) == m
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

from cipherseg.errors import ProtocolError
from cipherseg.wire import Checksum, WireFormat

WIRE = WireFormat(b"CSMSG", 1, "protocol message", checksum=Checksum.NONE, error=ProtocolError,
                  max_header=4 * 1024 * 1024)
# Keyed by (protocol, class name): two protocols may both have, say, a `Centroids` message.
_REGISTRY: dict[tuple[str, str], type[Message]] = {}
# Each protocol's descriptor, by wire name.
PROTOCOLS: dict[str, ProtocolSpec] = {}
# Protocol versions each protocol accepts (from its descriptor).
SUPPORTED_VERSIONS: dict[str, frozenset[int]] = {}

M = TypeVar("M", bound="type[Message]")


@dataclasses.dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """A protocol's descriptor: its wire name, the version it sends, the versions it reads."""

    name: str
    version: int
    accepts: frozenset[int]


def define_protocol(name: str, version: int, *, accepts: Iterable[int] | None = None
                    ) -> ProtocolSpec:
    """Declare protocol ``name``: it sends ``version`` and reads ``accepts`` (default: that
    version only). Declaring the same protocol twice differently is a programming error.

    >>> define_protocol("doc-v2", version=2, accepts=(1, 2))
    ProtocolSpec(name='doc-v2', version=2, accepts=frozenset({1, 2}))
    >>> define_protocol("doc-v2", version=3)
    Traceback (most recent call last):
    ...
    TypeError: protocol 'doc-v2' is already defined with version 2 reading [1, 2]
    """
    accepted = frozenset(accepts) if accepts is not None else frozenset({version})
    if version not in accepted:
        raise TypeError(f"protocol {name!r} must read the version {version} it sends")
    spec = ProtocolSpec(name, version, accepted)
    existing = PROTOCOLS.get(name)
    if existing is not None and existing != spec:
        raise TypeError(f"protocol {name!r} is already defined with version {existing.version}"
                        f" reading {sorted(existing.accepts)}")
    PROTOCOLS[name] = spec
    SUPPORTED_VERSIONS[name] = accepted
    return spec


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """Envelope every protocol message carries."""

    PROTOCOL: ClassVar[str] = ""
    protocol_version: int
    session_id: str
    round: int

    def to_bytes(self) -> bytes:
        header: dict[str, Any] = {"type": type(self).__name__, "protocol": self.PROTOCOL}
        blobs: list[bytes] = []
        blob_fields: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (bytes, bytearray)):
                blob_fields[field.name] = len(blobs)
                blobs.append(bytes(value))
            elif isinstance(value, tuple) and value and all(
                isinstance(v, (bytes, bytearray)) for v in value
            ):
                blob_fields[field.name] = [len(blobs), len(value)]
                blobs.extend(bytes(v) for v in value)
            else:
                header[field.name] = list(value) if isinstance(value, tuple) else value
        header["_blobs"] = blob_fields
        return WIRE.pack(header, blobs)

    @staticmethod
    def from_bytes(data: bytes | bytearray | memoryview) -> Message:
        """Parse any registered message; refuse unknown types and versions."""
        try:
            return _parse(data)
        except ProtocolError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ProtocolError(f"malformed protocol message: {exc}") from exc


def peek_envelope(data: bytes | bytearray | memoryview) -> tuple[str, str]:
    """(message type, session id) from the JSON header alone: no ciphertext is read or
    copied. Refuses what :meth:`Message.from_bytes` would refuse at the header.

    >>> from cipherseg.protocols.outsourced.messages import Close
    >>> peek_envelope(Close(protocol_version=1, session_id="s7", round=3).to_bytes())
    ('Close', 's7')
    """
    try:
        header = WIRE.peek_header(data)
        name, session_id = header["type"], header["session_id"]
    except KeyError as exc:
        raise ProtocolError(f"malformed protocol message: {exc}") from exc
    if not isinstance(name, str) or not isinstance(session_id, str):
        raise ProtocolError("malformed protocol message: type and session id must be strings")
    return name, session_id


def _parse(data: bytes | bytearray | memoryview) -> Message:
    envelope = WIRE.unpack(data)
    header, blobs = envelope.header, envelope.blobs
    name, protocol = header.pop("type"), header.pop("protocol")
    if not isinstance(header.get("session_id"), str):
        raise ProtocolError("malformed protocol message: the session id must be a string")
    cls = _REGISTRY.get((protocol, name))
    if cls is None:
        raise ProtocolError(f"unknown protocol message type {name!r} of protocol {protocol!r}")
    version = header["protocol_version"]
    allowed = SUPPORTED_VERSIONS.get(cls.PROTOCOL, frozenset())
    if version not in allowed:
        raise ProtocolError(
            f"{cls.PROTOCOL} protocol version {version} is not supported "
            f"(supported: {sorted(allowed)}); upgrade the older party"
        )
    kwargs: dict[str, Any] = {}
    blob_fields = header.pop("_blobs")
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    for name, value in header.items():
        if name not in types:
            raise ProtocolError(f"unexpected field {name!r} in {cls.__name__}")
        kwargs[name] = tuple(value) if isinstance(value, list) else value
    for name, ref in blob_fields.items():
        if isinstance(ref, list):
            start, n = ref
            kwargs[name] = tuple(blobs[start:start + n])
        else:
            kwargs[name] = blobs[ref]
    return cls(**kwargs)


def register_message(cls: M) -> M:
    """Class decorator: make a message type parseable by :meth:`Message.from_bytes`."""
    if not cls.PROTOCOL:
        raise TypeError(f"{cls.__name__} must set PROTOCOL")
    if cls.PROTOCOL not in PROTOCOLS:
        raise TypeError(f"{cls.__name__}: declare protocol {cls.PROTOCOL!r} with "
                        "define_protocol(name, version) before registering its messages")
    _REGISTRY[(cls.PROTOCOL, cls.__name__)] = cls
    return cls
