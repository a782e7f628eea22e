"""Zhou–Wornell VHE: correctness against numpy integer arithmetic, bounds, serialisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cipherseg.errors import (
    CiphertextError,
    EncodingError,
    ParameterError,
)
from cipherseg.schemes.vhe import Ring, VHECiphertexts, VHEContext, VHEParams
from cipherseg.schemes.vhe_keys import VHESecretKey

HYP = settings(max_examples=25, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def setups(draw: st.DrawFn, max_terms: int = 64) -> tuple[VHEParams, VHESecretKey, np.ndarray]:
    """Parameters on both arithmetic paths, a key and a batch of plaintexts."""
    d = draw(st.integers(1, 6))
    m = draw(st.integers(1, 4))
    plain_bits = draw(st.integers(2, 20))
    extra = draw(st.sampled_from([0, 0, 7, 40]))  # 40: usually the Python-integer path
    noise = draw(st.sampled_from([1, 3, 50]))
    base = VHEParams.for_workload(d, plain_bits, max_terms=max_terms, noise_bound=noise,
                                  secret_dim=m)
    params = VHEParams.for_workload(d, plain_bits, max_terms=max_terms, noise_bound=noise,
                                    secret_dim=m, min_ciphertext_bits=base.ciphertext_bits + extra)
    key = VHESecretKey.generate(params, rng=draw(st.integers(0, 2**32)))
    n = draw(st.integers(1, 12))
    bound = params.max_plaintext
    seed = draw(st.integers(0, 2**32))
    x = np.random.default_rng(seed).integers(-bound, bound + 1, size=(n, d))
    return params, key, x


def as_int(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(object)


@HYP
@given(setups())
def test_secret_and_public_encryption_round_trip(setup: tuple) -> None:
    params, key, x = setup
    ctx = VHEContext(params)
    assert np.array_equal(as_int(key.decrypt(key.encrypt(x))), as_int(x))
    c_pub = ctx.public_encrypt(key.encryption_key(), x)
    assert np.array_equal(as_int(key.decrypt(c_pub)), as_int(x))


@HYP
@given(setups(), st.data())
def test_addition_and_integer_combinations_match_numpy(setup: tuple, data: st.DataObject
                                                       ) -> None:
    params, key, x = setup
    ctx = VHEContext(params)
    y = x[::-1].copy()
    cx, cy = key.encrypt(x), key.encrypt(y)
    assert np.array_equal(as_int(key.decrypt(ctx.add(cx, cy))), as_int(x + y))
    assert np.array_equal(as_int(key.decrypt(ctx.sub(cx, cy))), as_int(x - y))
    n = x.shape[0]
    coeffs = np.array(data.draw(st.lists(st.lists(st.integers(-3, 3), min_size=n, max_size=n),
                                         min_size=1, max_size=4)))
    if np.abs(coeffs).sum(axis=1).max() <= params.max_terms:
        out = key.decrypt(ctx.combine(cx, coeffs, axis=0))
        assert np.array_equal(as_int(out), as_int(coeffs) @ as_int(x))


@HYP
@given(setups(), st.data())
def test_linear_transformation_matches_numpy(setup: tuple, data: st.DataObject) -> None:
    params, key, x = setup
    ctx = VHEContext(params)
    d = params.dim
    rows = data.draw(st.integers(1, 5))
    g = np.array(data.draw(st.lists(st.lists(st.integers(-2, 2), min_size=d, max_size=d),
                                    min_size=rows, max_size=rows)))
    if np.abs(g).sum(axis=1).max() > params.max_terms:
        return
    out_key = key if rows == d else VHESecretKey.generate(params, plain_dim=rows, rng=1)
    ltk = key.linear_transform_key(g, out_key if rows != d else None)
    c = ctx.key_switch(key.encrypt(x), ltk)
    assert np.array_equal(as_int(out_key.decrypt(c)), as_int(x) @ as_int(g).T)


@HYP
@given(setups())
def test_key_switching_to_another_key(setup: tuple) -> None:
    params, key, x = setup
    other = VHESecretKey.generate(params, rng=5)
    c = VHEContext(params).key_switch(key.encrypt(x), key.key_switch_key(other))
    assert c.key_id == other.key_id
    assert np.array_equal(as_int(other.decrypt(c)), as_int(x))


@HYP
@given(setups())
def test_serialisation_round_trip(setup: tuple) -> None:
    params, key, x = setup
    ctx = VHEContext(params)
    c = key.encrypt(x)
    back = ctx.ciphertexts_from_bytes(ctx.ciphertexts_to_bytes(c))
    assert np.array_equal(as_int(back.data), as_int(c.data))
    assert (back.key_id, back.noise_bound, back.value_bound) == (c.key_id, c.noise_bound,
                                                                  c.value_bound)
    ksk = key.linear_transform_key(np.eye(params.dim, dtype=np.int64))
    ksk2 = ctx.key_from_bytes(ctx.key_to_bytes(ksk))
    assert np.array_equal(as_int(ksk2.matrix), as_int(ksk.matrix))
    assert np.array_equal(ksk2.g, ksk.g)
    assert np.array_equal(as_int(key.decrypt(ctx.key_switch(back, ksk2))), as_int(x))


def test_params_json_round_trip() -> None:
    p = VHEParams.for_workload(4, 16, max_terms=1000, secret_dim=2, noise_bound=3)
    assert VHEParams.from_json(p.to_json()) == p
    with pytest.raises(ParameterError, match="malformed"):
        VHEParams.from_json('{"dim": 3}')


# --- the decryption bound ------------------------------------------------------------------------
def edge_params(w: int) -> VHEParams:
    # worst noise = max_terms · (B + key_switches · (d+m) · ℓ · B) = 1 · (1 + 3·32) = 97
    return VHEParams(dim=2, plaintext_bits=8, ciphertext_bits=32, w=w, noise_bound=1)


def test_parameters_at_the_decryption_bound_decrypt_every_worst_case_noise() -> None:
    params = edge_params(195)  # 2 · 97 = 194 < 195: the smallest w accepted
    assert params.worst_noise == 97
    key = VHESecretKey.generate(params, rng=0)
    x = np.array([[127, -127], [0, 1], [-5, 64]])
    for e in (97, -97):
        assert np.array_equal(key.decrypt(key.encrypt(x, noise=np.full(x.shape, e))), x)


def test_parameters_past_the_decryption_bound_are_refused() -> None:
    with pytest.raises(ParameterError, match=r"cannot decrypt correctly.*w >= 195"):
        edge_params(194)  # 2 · 97 = 194, not < 194


def test_the_bound_is_tight_one_more_unit_of_noise_decrypts_wrongly() -> None:
    params = edge_params(195)
    key = VHESecretKey.generate(params, rng=0)
    x = np.array([[3, -3]])
    c = key.encrypt(x, noise=np.full(x.shape, 97))
    # add one more unit of noise by hand (S·[1, 1, 0] = [1, 1]): 98 ≥ w/2 = 97.5
    bumped = VHECiphertexts(Ring(32).add(c.data, np.array([[1, 1, 0]], dtype=np.uint64)),
                            c.key_id, c.plain_dim, 98, c.value_bound)
    assert np.array_equal(key.decrypt(bumped), x + 1)
    with pytest.raises(ParameterError, match="exceeds the parameters' worst case"):
        key.encrypt(x, noise=np.full(x.shape, 98))


def test_plaintext_overflow_edge() -> None:
    # w·(max_value + 1) + noise must stay below q/2 = 2^31.
    ok = VHEParams(dim=2, plaintext_bits=8, ciphertext_bits=32, w=2**23, noise_bound=1)
    assert ok.w * (ok.max_value + 1) + ok.worst_noise < 2**31
    with pytest.raises(ParameterError, match="does not fit in q/2"):
        VHEParams(dim=2, plaintext_bits=9, ciphertext_bits=32, w=2**23, noise_bound=1)


def test_operations_past_the_budget_are_refused() -> None:
    params = VHEParams.for_workload(2, 8, max_terms=4)
    key = VHESecretKey.generate(params, rng=0)
    ctx = VHEContext(params)
    c = key.encrypt(np.ones((10, 2), dtype=np.int64))
    with pytest.raises(ParameterError, match="summing 10 ciphertexts"):
        ctx.sum_by_label(c, np.zeros(10, dtype=np.int64), 1)
    with pytest.raises(ParameterError, match="could decrypt wrongly"):
        ctx.combine(c.select(slice(0, 2)), [[2**20, 0]], axis=0)
    sums, counts = ctx.sum_by_label(c.select(slice(0, 4)), [0, 1, 1, 0], 2)
    assert counts.tolist() == [2, 2]
    assert key.decrypt(sums).tolist() == [[2, 2], [2, 2]]


@pytest.mark.parametrize("kwargs, match", [
    ({"dim": 0}, "dim"),
    ({"noise_bound": 0}, "noise_bound"),
    ({"ciphertext_bits": 4}, "ciphertext_bits"),
    ({"w": 1}, "w must be"),
    ({"dim": 2.5}, "integer"),
])
def test_bad_parameters(kwargs: dict, match: str) -> None:
    base = {"dim": 2, "plaintext_bits": 8, "ciphertext_bits": 40, "w": 2**12, "noise_bound": 1}
    base.update(kwargs)
    with pytest.raises(ParameterError, match=match):
        VHEParams(**base)


def test_backend_choice() -> None:
    assert VHEParams.for_workload(3, 12, min_ciphertext_bits=64).backend == "uint64"
    assert VHEParams.for_workload(3, 12, min_ciphertext_bits=65).backend == "object"
    assert VHEParams.for_workload(3, 40, max_terms=2**20).backend == "object"


# --- bad input ---------------------------------------------------------------------------
def test_bad_plaintexts_and_ciphertexts() -> None:
    params = VHEParams.for_workload(2, 8)
    key = VHESecretKey.generate(params, rng=0)
    ctx = VHEContext(params)
    with pytest.raises(EncodingError, match="integers"):
        key.encrypt([[0.5, 1.0]])
    with pytest.raises(EncodingError, match="plaintext_bits"):
        key.encrypt([[128, 0]])
    with pytest.raises(EncodingError, match="expected plaintext rows of 2"):
        key.encrypt([[1, 2, 3]])
    blob = ctx.ciphertexts_to_bytes(key.encrypt([[1, 2]]))
    with pytest.raises(CiphertextError, match="checksum"):
        ctx.ciphertexts_from_bytes(blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:])
    with pytest.raises(CiphertextError):
        ctx.ciphertexts_from_bytes(blob[:20])
    with pytest.raises(CiphertextError, match="bad magic"):
        ctx.ciphertexts_from_bytes(b"X" * 40)
    other = VHEContext(VHEParams.for_workload(2, 8, min_ciphertext_bits=params.ciphertext_bits + 1))
    with pytest.raises(CiphertextError, match="modulo"):
        other.ciphertexts_from_bytes(blob)
    stranger = VHESecretKey.generate(params, rng=1)
    with pytest.raises(CiphertextError, match="different keys"):
        ctx.add(key.encrypt([[1, 2]]), stranger.encrypt([[1, 2]]))
    with pytest.raises(CiphertextError, match="another key"):
        stranger.decrypt(key.encrypt([[1, 2]]))


def test_large_batches_are_exact() -> None:
    params = VHEParams.for_workload(3, 16, max_terms=2)
    key = VHESecretKey.generate(params, rng=0)
    x = np.random.default_rng(0).integers(-(2**15) + 1, 2**15, size=(100_000, 3))
    ctx = VHEContext(params)
    assert np.array_equal(key.decrypt(ctx.add(key.encrypt(x), key.encrypt(x))), 2 * x)


def test_a_linear_map_by_key_switching_and_no_key_in_repr() -> None:
    params = VHEParams.for_workload(3, 12, max_terms=16)
    key = VHESecretKey.generate(params, rng=0)
    ctx = VHEContext(params)
    c = ctx.ciphertexts_from_bytes(ctx.ciphertexts_to_bytes(key.encrypt(np.array([[1, -2, 3]]))))
    out = VHESecretKey.generate(params, plain_dim=1, rng=1)
    summed = ctx.key_switch(c, key.linear_transform_key(np.array([[1, 1, 1]]), out))
    assert out.decrypt(summed).tolist() == [[2]]
    assert str(int(key.secret_matrix()[0, -1])) not in repr(key)
