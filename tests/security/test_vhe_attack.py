"""The VHE break: plaintexts recovered from public material only, asserted exactly.

In every test the victim's key lives inside a helper; the attacker gets *bytes*: the public
parameters, public key-switching matrices and ciphertexts made by someone else. It never
sees a :class:`VHESecretKey`.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import PartyLink
from cipherseg.protocols.seed.centre import SeedComputeCentre
from cipherseg.protocols.seed.messages import SeedUpload
from cipherseg.protocols.seed.owner import SeedDataOwner
from cipherseg.schemes.vhe import VHEContext, VHEParams
from cipherseg.schemes.vhe_attack import (
    AttackFailed,
    decrypt_with,
    recover_key_from_encryption_key,
    recover_key_from_linear_transform_keys,
    solve_lwe_row,
)
from cipherseg.schemes.vhe_keys import VHESecretKey
from cipherseg.transport.inprocess import InProcessTransport


def attacker_public_key(params_json: str, public_key: bytes, ciphertexts: bytes) -> np.ndarray:
    """Everything an eavesdropper on a public-key VHE deployment holds, and nothing else."""
    params = VHEParams.from_json(params_json)
    ctx = VHEContext(params)
    stolen = recover_key_from_encryption_key(params, ctx.key_from_bytes(public_key))
    return np.asarray(decrypt_with(params, stolen, ctx.ciphertexts_from_bytes(ciphertexts)))


def victim_public_key(params: VHEParams, x: np.ndarray, seed: int) -> tuple[str, bytes, bytes]:
    owner = VHESecretKey.generate(params, rng=seed)
    ctx = VHEContext(params)
    pk = ctx.key_to_bytes(owner.encryption_key())  # published
    # A third party encrypts with the published key.
    sender_ctx = VHEContext(VHEParams.from_json(params.to_json()))
    c = sender_ctx.public_encrypt(sender_ctx.key_from_bytes(pk), x)
    return params.to_json(), pk, sender_ctx.ciphertexts_to_bytes(c)


@pytest.mark.parametrize("params", [
    VHEParams.for_workload(3, 12, max_terms=100_000),                      # uint64, m = 1
    VHEParams.for_workload(3, 12, max_terms=10, secret_dim=4, noise_bound=100,
                           min_ciphertext_bits=64),                         # uint64, q = 2^64
    VHEParams.for_workload(5, 20, max_terms=10, secret_dim=3, min_ciphertext_bits=100),  # exact
    VHEParams.for_workload(3, 12, secret_dim=16),                           # larger LWE secret
], ids=["m1", "q64-B100-m4", "object-q100", "m16"])
def test_public_key_attack_recovers_plaintexts(params: VHEParams) -> None:
    x = np.random.default_rng(1).integers(-params.max_plaintext, params.max_plaintext + 1,
                                          size=(200, params.dim))
    recovered = attacker_public_key(*victim_public_key(params, x, seed=123))
    assert np.array_equal(recovered.astype(object), x.astype(object))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 6), m=st.integers(1, 6), noise=st.sampled_from([1, 7, 1000]),
       extra=st.sampled_from([0, 10, 50]), seed=st.integers(0, 2**32))
def test_public_key_attack_many_shapes(d: int, m: int, noise: int, extra: int, seed: int
                                       ) -> None:
    base = VHEParams.for_workload(d, 16, max_terms=50, secret_dim=m, noise_bound=noise)
    params = VHEParams.for_workload(d, 16, max_terms=50, secret_dim=m, noise_bound=noise,
                                    min_ciphertext_bits=base.ciphertext_bits + extra)
    x = np.random.default_rng(seed).integers(-(2**15) + 1, 2**15, size=(20, d))
    recovered = attacker_public_key(*victim_public_key(params, x, seed))
    assert np.array_equal(recovered.astype(object), x.astype(object))


def test_linear_transform_keys_give_away_the_source_key() -> None:
    params = VHEParams.for_workload(4, 16, max_terms=1000, secret_dim=2)
    owner = VHESecretKey.generate(params, rng=9)
    out = VHESecretKey.generate(params, plain_dim=2, rng=10)
    ctx = VHEContext(params)
    # Two linear transformations a centre might legitimately ask for (rows span Z^4 mod 2).
    g1 = np.array([[1, 0, 0, 0], [0, 1, 1, 0]])
    g2 = np.array([[0, 0, 1, 0], [1, 1, 1, 1]])
    keys = [ctx.key_from_bytes(ctx.key_to_bytes(owner.linear_transform_key(g, out)))
            for g in (g1, g2)]
    x = np.random.default_rng(2).integers(-30000, 30000, size=(500, 4))
    secret_key_ciphertexts = ctx.ciphertexts_from_bytes(
        ctx.ciphertexts_to_bytes(owner.encrypt(x)))
    stolen, outputs = recover_key_from_linear_transform_keys(params, keys)
    assert np.array_equal(decrypt_with(params, stolen, secret_key_ciphertexts), x)
    assert np.array_equal(stolen.t, owner.secret_matrix()[:, 4:])  # the key itself
    assert np.array_equal(outputs[out.key_id].t, out.secret_matrix()[:, 2:])


def test_seed_mode_centre_decrypts_every_customer() -> None:
    """Run the real seed-mode protocol; the centre keeps the upload and breaks it."""
    rng = np.random.default_rng(4)
    x = rng.integers(-5000, 5000, size=(3000, 3))
    seen: list[bytes] = []
    centre = SeedComputeCentre()
    link = PartyLink(centre, sender="owner")

    def spying_handler(data: bytes) -> bytes:
        seen.append(data)
        return link.request_bytes(data)

    from cipherseg.protocols.seed.params import seed_params

    params = seed_params(3000, 3, 5000)
    SeedDataOwner(params, rng=5).run(x, x[:3].astype(float), InProcessTransport(spying_handler),
                                     max_iter=3, tol=0.0)
    upload = next(m for m in map(Message.from_bytes, seen) if isinstance(m, SeedUpload))
    p = VHEParams.from_json(upload.params_json)
    ctx = VHEContext(p)
    keys = [ctx.key_from_bytes(b) for b in upload.feature_keys]
    stolen, _ = recover_key_from_linear_transform_keys(p, keys)
    recovered = decrypt_with(p, stolen, ctx.ciphertexts_from_bytes(upload.ciphertexts))
    assert np.array_equal(recovered, x)
    assert not centre.holds_secret_key()


def test_lwe_solver_refuses_when_no_solution_fits_the_bound() -> None:
    q = 2**40
    rng = np.random.default_rng(0)
    a = rng.integers(0, q, size=(2, 40)).tolist()
    u = rng.integers(0, q, size=40).tolist()  # not an LWE sample: uniform
    with pytest.raises(AttackFailed):
        solve_lwe_row(a, u, q, 3)


@pytest.mark.parametrize("scenario", ["seed-mode", "public-key"])
def test_cli_demonstration_recovers_and_warns(scenario: str) -> None:
    from typer.testing import CliRunner

    from cipherseg.cli import app

    result = CliRunner().invoke(app, ["attack", "vhe", "--customers", "300", "--scenario",
                                      scenario, "--show", "3"])
    assert result.exit_code == 0, result.output
    assert "BROKEN" in result.output
    assert "ALL 300 customers recovered exactly" in result.output
    assert result.output.count("│ yes") == 3
