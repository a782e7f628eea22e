"""The envelope every serialised object travels in: round trips and refusals, by property."""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cipherseg.errors import CiphertextError, ProtocolError
from cipherseg.wire import Checksum, Reader, WireFormat

FORMATS = {
    "crc32": WireFormat(b"CSTEST", 3, "test object"),
    "sha256": WireFormat(b"CSTS", 1, "test object", checksum=Checksum.SHA256_128),
    "none": WireFormat(b"CSTN", 7, "test message", checksum=Checksum.NONE, error=ProtocolError),
}
CHECKED = ("crc32", "sha256")

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
headers = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
blob_lists = st.lists(st.binary(max_size=300), max_size=5)
names = st.sampled_from(sorted(FORMATS))


@given(names, headers, blob_lists)
def test_round_trip(name: str, header: dict[str, Any], blobs: list[bytes]) -> None:
    fmt = FORMATS[name]
    data = fmt.pack(header, blobs)
    for form in (data, bytearray(data), memoryview(data)):
        env = fmt.unpack(form)
        assert env.header == header and env.blobs == tuple(blobs)
        assert env.checksum == data[len(data) - fmt.checksum.value:]
    assert fmt.peek_header(data) == header
    assert data.startswith(fmt.magic)


@given(names, headers, blob_lists, st.data())
def test_every_truncation_is_refused(name: str, header: dict[str, Any], blobs: list[bytes],
                                     data: st.DataObject) -> None:
    fmt = FORMATS[name]
    packed = fmt.pack(header, blobs)
    cut = data.draw(st.integers(0, len(packed) - 1))
    with pytest.raises(fmt.error):
        fmt.unpack(packed[:cut])


@given(st.sampled_from(CHECKED), headers, blob_lists, st.data())
def test_every_bit_flip_is_refused_as_corruption(name: str, header: dict[str, Any],
                                                 blobs: list[bytes], data: st.DataObject) -> None:
    fmt = FORMATS[name]
    packed = bytearray(fmt.pack(header, blobs))
    i = data.draw(st.integers(len(fmt.magic), len(packed) - 1))
    packed[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(CiphertextError, match="corrupted or truncated"):
        fmt.unpack(bytes(packed))


@given(headers, blob_lists, st.data())
def test_without_a_checksum_a_flip_gives_an_envelope_or_the_formats_error(
        header: dict[str, Any], blobs: list[bytes], data: st.DataObject) -> None:
    fmt = FORMATS["none"]
    packed = bytearray(fmt.pack(header, blobs))
    i = data.draw(st.integers(0, len(packed) - 1))
    packed[i] ^= 1 << data.draw(st.integers(0, 7))
    with contextlib.suppress(ProtocolError):
        fmt.unpack(bytes(packed))


@given(names, st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_the_formats_error(name: str, junk: bytes) -> None:
    fmt = FORMATS[name]
    for data in (junk, fmt.magic + junk):
        with contextlib.suppress(fmt.error):
            fmt.unpack(data)


@given(names, headers, st.binary(min_size=1, max_size=6))
def test_wrong_magic_is_refused(name: str, header: dict[str, Any], other: bytes) -> None:
    fmt = FORMATS[name]
    mask = other.ljust(len(fmt.magic), b"\0")[:len(fmt.magic)]
    magic = bytes(b ^ o for b, o in zip(fmt.magic, mask, strict=True))
    if magic == fmt.magic:
        return
    stranger = dataclasses.replace(fmt, magic=magic)
    with pytest.raises(fmt.error, match="bad magic"):
        fmt.unpack(stranger.pack(header))
    with pytest.raises(fmt.error, match="bad magic"):
        fmt.peek_header(stranger.pack(header))


@given(names, headers, st.integers(0, 2**16 - 1))
def test_other_format_versions_are_refused(name: str, header: dict[str, Any],
                                           version: int) -> None:
    fmt = FORMATS[name]
    if version == fmt.version:
        return
    newer = dataclasses.replace(fmt, version=version).pack(header, [b"x"])
    with pytest.raises(fmt.error, match=f"format version {version} is not supported"):
        fmt.unpack(newer)
    with pytest.raises(fmt.error, match=f"format version {version} is not supported"):
        fmt.peek_header(newer)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(names, st.integers(1, 2**32 - 1))
def test_oversized_headers_are_refused_before_they_are_read(name: str, extra: int) -> None:
    fmt = dataclasses.replace(FORMATS[name], max_header=64)
    with pytest.raises(fmt.error, match="exceeds the 64-byte limit"):
        fmt.pack({"note": "x" * 64})
    length = min(64 + extra, 2**32 - 1)
    # A header length beyond the limit, over bytes that are not there: refused for its size
    # (peek) or for its checksum, never read.
    forged = fmt.magic + struct.pack("<HI", fmt.version, length) + b"{}"
    with pytest.raises(fmt.error, match="exceeds the 64-byte limit"):
        fmt.peek_header(forged)
    with pytest.raises(fmt.error):
        fmt.unpack(forged + fmt.checksum.compute([forged]))


def test_an_oversized_header_with_a_valid_checksum_is_refused_for_its_size() -> None:
    fmt = dataclasses.replace(FORMATS["crc32"], max_header=64)
    big = dataclasses.replace(fmt, max_header=1024).pack({"note": "x" * 100})
    with pytest.raises(CiphertextError, match="a 111-byte header exceeds the 64-byte limit"):
        fmt.unpack(big)


def test_blob_counts_and_lengths_beyond_the_data_are_refused_without_allocating() -> None:
    fmt = FORMATS["none"]
    head = fmt.magic + struct.pack("<HI", fmt.version, 2) + b"{}"
    with pytest.raises(ProtocolError, match="4294967295 blobs announced"):
        fmt.unpack(head + struct.pack("<I", 2**32 - 1))
    with pytest.raises(ProtocolError, match="truncated inside a blob"):
        fmt.unpack(head + struct.pack("<IQ", 1, 2**63) + b"abc")
    with pytest.raises(ProtocolError, match="trailing bytes"):
        fmt.unpack(fmt.pack({}, [b"a"]) + b"!")


@pytest.mark.parametrize("header", [b"[1, 2]", b"\xff\xfe", b"{", b"1e999999"])
def test_headers_that_are_not_json_objects_are_refused(header: bytes) -> None:
    fmt = FORMATS["crc32"]
    body = fmt.magic + struct.pack("<HI", fmt.version, len(header)) + header
    body += struct.pack("<I", 0)
    with pytest.raises(CiphertextError, match="malformed test object"):
        fmt.unpack(body + fmt.checksum.compute([body]))


def test_the_kind_is_checked_when_asked() -> None:
    fmt = FORMATS["sha256"]
    data = fmt.pack({"kind": "ciphertext"})
    assert fmt.unpack(data, kind="ciphertext").header == {"kind": "ciphertext"}
    with pytest.raises(CiphertextError, match="expected a partial decryption, got a ciphertext"):
        fmt.unpack(data, kind="partial decryption")
    with pytest.raises(CiphertextError, match="got a malformed test object"):
        fmt.unpack(fmt.pack({"kind": 3}), kind="ciphertext")


def test_not_bytes_is_refused() -> None:
    with pytest.raises(ProtocolError, match="must be bytes, got str"):
        FORMATS["none"].unpack("CSTN")  # type: ignore[arg-type]


@given(st.binary(max_size=40), st.lists(st.integers(0, 12), max_size=6))
def test_reader_reads_only_what_is_there(body: bytes, sizes: list[int]) -> None:
    reader = Reader(body, "test blob")
    pos = 0
    for n in sizes:
        if pos + n <= len(body):
            assert reader.take(n) == body[pos:pos + n]
            pos += n
        else:
            with pytest.raises(CiphertextError, match="inconsistent with its declared sizes"):
                reader.take(n)
    if pos == len(body):
        reader.done()
    else:
        with pytest.raises(CiphertextError, match="unexpected bytes"):
            reader.done()


def test_every_scheme_and_the_messages_use_this_envelope() -> None:
    from cipherseg.protocols.outsourced.messages import Close
    from cipherseg.schemes.ckks import CkksParams
    from cipherseg.schemes.ckks_keys import CkksSecretContext
    from cipherseg.schemes.plain import PlainAggregation
    from cipherseg.schemes.threshold import ThresholdParams
    from cipherseg.schemes.vhe import VHEContext, VHEParams
    from cipherseg.schemes.vhe_keys import VHESecretKey

    owner = CkksSecretContext.generate(CkksParams.for_depth(1))
    vhe = VHEParams.for_workload(2, 8)
    samples = {
        b"CSCK\x02\x00": [owner.public_bytes(), owner.encrypt_to_bytes([1.0])],
        b"CSTH\x03\x00": [ThresholdParams().to_bytes()],
        b"CSVH\x02\x00": [VHEContext(vhe).ciphertexts_to_bytes(
            VHESecretKey.generate(vhe, rng=0).encrypt([[1, 2]]))],
        b"CSPL\x03\x00": [PlainAggregation().encrypt(np.array([1]))],
        # Protocol messages kept their format (version 1): same bytes as before the wire module.
        b"CSMSG\x01\x00": [Close(protocol_version=1, session_id="s", round=0).to_bytes()],
    }
    for prefix, blobs in samples.items():
        for blob in blobs:
            assert blob.startswith(prefix)
    assert samples[b"CSMSG\x01\x00"][0] == (
        b'CSMSG\x01\x00k\x00\x00\x00{"type":"Close","protocol":"kmeans-outsourced",'
        b'"protocol_version":1,"session_id":"s","round":0,"_blobs":{}}\x00\x00\x00\x00')
