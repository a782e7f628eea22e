"""Protocol 4.1 over HTTP: a compute centre in another process gives the in-process answers,
holds no key material, and every refusal reaches the owner as a clear error.

The end-to-end tests start the real service (`cipherseg centre serve`) as a separate process
on a free loopback port; the error-handling tests drive the same ASGI app through FastAPI's
TestClient (real HTTP semantics, no socket).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from cipherseg import EncryptedKMeans
from cipherseg.cli import app as cli_app
from cipherseg.errors import (
    CiphertextError,
    KeyCustodyError,
    ParameterError,
    ProtocolError,
    TransportError,
    ValidationError,
)
from cipherseg.hosting.centre_http import create_centre_app
from cipherseg.hosting.centre_process import CentreProcess
from cipherseg.protocols.outsourced import messages as p
from cipherseg.schemes.ckks import CkksParams, pack_context_bytes, unpack_context_bytes
from cipherseg.schemes.ckks_keys import CkksSecretContext
from cipherseg.testing.centre_service import CentreService
from cipherseg.testing.ports import free_port
from cipherseg.transport.http import HttpTransport

TOKEN = "test-token-0123456789abcdef"
# The front relays only messages whose envelope it reads, and opens sessions with uploads.
AN_UPLOAD = p.Upload(protocol_version=p.VERSION, session_id="t", round=1).to_bytes()
KEY_MODULES = ("cipherseg.schemes.ckks_keys", "cipherseg.schemes.threshold_keys",
               "cipherseg.schemes.vhe_keys", "cipherseg.protocols.outsourced.owner",
               "cipherseg.pii")


def _plain(output: str) -> str:
    """CLI output without Rich's box drawing, on one line."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`cipherseg centre serve` in its own process (2 centre workers); yields (url, token
    file). After the module's tests: the service's log never shows the token."""
    token_file = tmp_path_factory.mktemp("centre") / "centre.token"
    with CentreService(token_file, workers=2) as url:
        yield url, token_file
    log = Path(str(token_file) + ".log").read_text()
    assert "POST /v1/messages" in log
    assert token_file.read_text().strip() not in log


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    # Two blocks of 4096 (the last one partial), three features, three separated groups.
    # Not rounded to a grid: with records on a 0.01 grid and initial centres that are records,
    # some records are exactly as far from two centres (7 of 6000 for one k-means++ draw), the
    # label of such a tie is arbitrary (CKKS noise here, float rounding in scikit-learn), and
    # a run stopped by `tol` before its fixed point then ends on a slightly different
    # trajectory (ARI 0.9989 against scikit-learn, seen in CI).
    rng = np.random.default_rng(11)
    centres = np.array([[-0.5, -0.4, 0.3], [0.5, 0.5, -0.4], [0.4, -0.5, 0.5]])
    labels = rng.integers(0, 3, 6000)
    return centres[labels] + rng.normal(0, 0.12, (6000, 3))


def _transport(served: tuple[str, Path]) -> HttpTransport:
    url, token_file = served
    return HttpTransport(url, token=token_file.read_text().strip())


def test_a_remote_centre_gives_the_in_process_result(served: Any, X: np.ndarray) -> None:
    init = X[[0, 1, 2]]
    local = EncryptedKMeans(n_clusters=3, init=init, random_state=0, n_jobs=1).fit(X)
    with _transport(served) as centre:
        remote = EncryptedKMeans(n_clusters=3, init=init, random_state=0, n_jobs=1).fit(
            X, centre=centre)
        assert remote.report_["bytes_to_centre"] == centre.stats.bytes_to_server
        assert remote.report_["bytes_to_owner"] == centre.stats.bytes_to_client
    # Same start, same protocol: same labels; CKKS noise is fresh, so centres agree to its
    # precision (1e-7 in the normalised units).
    np.testing.assert_array_equal(remote.labels_, local.labels_)
    np.testing.assert_allclose(remote.cluster_centers_, local.cluster_centers_, atol=1e-6)
    assert remote.n_iter_ == local.n_iter_
    ref = KMeans(n_clusters=3, init=init, n_init=1).fit(X)
    assert adjusted_rand_score(ref.labels_, remote.labels_) >= 0.999
    np.testing.assert_allclose(remote.cluster_centers_, ref.cluster_centers_, atol=1e-6)


def test_remote_kmeans_plus_plus_and_a_reused_transport(served: Any, X: np.ndarray) -> None:
    with _transport(served) as centre:
        first = EncryptedKMeans(n_clusters=3, random_state=1, n_jobs=1).fit(X, centre=centre)
        after_first = centre.stats.snapshot()
        second = EncryptedKMeans(n_clusters=3, random_state=2, n_jobs=1).fit(X, centre=centre)
        status = centre.status()
    for km in (first, second):
        ref = KMeans(n_clusters=3, init=km.init_centers_, n_init=1).fit(X)
        assert adjusted_rand_score(ref.labels_, km.labels_) >= 0.999
    # Each fit reports its own bytes, not the transport's running total.
    assert first.report_["bytes_to_centre"] == after_first[0]
    assert second.report_["bytes_to_centre"] == centre.stats.bytes_to_server - after_first[0]
    assert status["sessions"] == 0  # both sessions closed


def test_the_service_holds_no_key_material_while_it_works(served: Any, X: np.ndarray) -> None:
    statuses: list[dict[str, Any]] = []
    with _transport(served) as centre:
        def progress(stage: str, done: int, total: int) -> None:
            if stage == "iterate" and done == 1:  # between two messages of an open session
                statuses.append(centre.status())

        EncryptedKMeans(n_clusters=2, init=X[[0, 1]], max_iter=3, n_jobs=1).fit(
            X, centre=centre, progress=progress)
    assert statuses and statuses[0]["sessions"] == 1
    assert statuses[0]["holds_secret_key"] is False
    assert "cipherseg.protocols.outsourced.centre" in statuses[0]["modules"]
    assert [m for m in statuses[0]["modules"] if m.startswith(KEY_MODULES)] == []


def test_a_context_carrying_a_secret_key_is_refused_over_http(served: Any) -> None:
    owner = CkksSecretContext.generate(CkksParams.for_depth(1))
    fields = unpack_context_bytes(owner.public_bytes())
    fields["secret_key"] = b"\x00" * 64
    upload = p.Upload(protocol_version=p.VERSION, session_id="with-key", round=1,
                      public_context=pack_context_bytes(fields), n_samples=1, n_features=1,
                      n_clusters=1, block_sizes=(1,),
                      features=(owner.encrypt_to_bytes(np.zeros(1)),))
    with _transport(served) as centre, pytest.raises(KeyCustodyError, match="compute centre:"):
        centre.exchange(upload)


def test_wrong_missing_token_and_unreachable_centre(served: Any) -> None:
    url, _ = served
    for token in (None, "another-token-of-enough-length"):
        with pytest.raises(TransportError, match="refused the access token"):
            HttpTransport(url, token=token).status()
    with pytest.raises(TransportError, match="cannot reach the compute centre"):
        HttpTransport(f"http://127.0.0.1:{free_port()}").status()


def test_centre_refusals_arrive_as_the_same_error(served: Any) -> None:
    with _transport(served) as centre:
        with pytest.raises(ProtocolError, match=r"^compute centre: not a cipherseg .*magic"):
            centre.request_bytes(b"not a message")
        bad_context = p.Upload(protocol_version=p.VERSION, session_id="s", round=1,
                               public_context=b"\x00" * 64, n_samples=1, n_features=1,
                               n_clusters=2, block_sizes=(1,), features=(b"\x00",))
        with pytest.raises(CiphertextError, match=r"^compute centre: (?!compute centre)"):
            centre.exchange(bad_context)
        with pytest.raises(ProtocolError, match="unknown session"):
            centre.exchange(p.Close(protocol_version=p.VERSION, session_id="nope", round=1))


@pytest.fixture(scope="module")
def link() -> Iterator[CentreProcess]:
    """The centre process the service relays to, for the app driven through TestClient."""
    with CentreProcess(n_jobs=1) as centre:
        yield centre


def _client(link: Any, **kwargs: Any) -> HttpTransport:
    app = create_centre_app(link, token=TOKEN, **kwargs)
    return HttpTransport("http://127.0.0.1", token=TOKEN, client=TestClient(app))


def test_an_oversized_message_is_refused_before_it_is_handled(link: CentreProcess) -> None:
    t = _client(link, max_message_bytes=1000)
    with pytest.raises(TransportError, match="exceeds this centre's limit of 1,000"):
        t.request_bytes(b"\x00" * 1001)
    # Without a Content-Length (chunked upload) the limit holds while reading.
    app = create_centre_app(link, token=TOKEN, max_message_bytes=1000)
    reply = TestClient(app).post("/v1/messages", headers={"Authorization": f"Bearer {TOKEN}"},
                                 content=iter([b"\x00" * 600, b"\x00" * 600]))
    assert reply.status_code == 413
    assert "exceeds this centre's limit" in reply.json()["detail"]


class _Link:
    """A centre link that fails as told (the error paths of the service and the client)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def request_bytes(self, data: bytes, *, sender: str) -> bytes:
        raise self.error

    def hello(self) -> dict[str, Any]:
        return {}

    def alive(self) -> bool:
        return True

    def restart(self) -> None:
        raise AssertionError("a live centre is not restarted")


def test_an_internal_failure_is_reported_without_its_details() -> None:
    failing = _Link(RuntimeError("internal detail that must stay at the centre"))
    with pytest.raises(TransportError, match="failed on this message") as info:
        _client(failing).request_bytes(AN_UPLOAD)
    assert "internal detail" not in str(info.value)


def test_only_the_centres_own_refusals_keep_their_class() -> None:
    # A ValidationError would read as "the user's data was at fault": a centre cannot send it.
    with pytest.raises(TransportError, match=r"failed \(HTTP 400, ValidationError\)"):
        _client(_Link(ValidationError("your data is bad"))).request_bytes(AN_UPLOAD)
    with pytest.raises(ProtocolError, match="compute centre: out of order"):
        _client(_Link(ProtocolError("out of order"))).request_bytes(AN_UPLOAD)


def test_the_token_never_travels_in_clear_to_another_host() -> None:
    with pytest.raises(ParameterError, match="over plain HTTP"):
        HttpTransport("http://centre.example:8787", token=TOKEN)
    HttpTransport("http://centre.example:8787", token=TOKEN, insecure_http=True).close()
    HttpTransport("https://centre.example:8787", token=TOKEN).close()
    HttpTransport("http://localhost:8787", token=TOKEN).close()


def test_a_url_that_is_not_a_centre_is_a_clear_error() -> None:
    other = FastAPI()

    @other.post("/v1/messages")
    def page() -> PlainTextResponse:
        return PlainTextResponse("<html>hello</html>")

    t = HttpTransport("http://127.0.0.1", client=TestClient(other))
    with pytest.raises(TransportError, match="not protocol bytes"):
        t.request_bytes(b"x")
    assert "token" not in repr(HttpTransport("https://c", token=TOKEN)).lower()
    assert TOKEN not in repr(HttpTransport("https://c", token=TOKEN))


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_get_a_cipherseg_error_never_a_crash(link: CentreProcess,
                                                            data: bytes) -> None:
    with pytest.raises((ProtocolError, CiphertextError)):
        _client(link).request_bytes(data)


@pytest.mark.parametrize(("args", "message"), [
    (["centre", "serve", "--host", "0.0.0.0"], "needs --token-file"),
    (["centre", "serve", "--host", "0.0.0.0", "--token-file", "t"], "needs --ssl-certfile"),
    (["centre", "serve", "--engine", "local", "--scheduler", "tcp://x:1"], "needs --engine dask"),
    (["demo", "--customers", "100", "--centre", "http://127.0.0.1:1", "--engine", "dask"],
     "a remote centre chooses its own"),
    (["demo", "--customers", "100", "--centre-token-file", "t"], "need --centre URL"),
    (["demo", "--customers", "100", "--centre", "ftp://x"], "must start with http"),
])
def test_bad_centre_options_are_refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 2
    assert message in _plain(result.output)


def test_a_cli_run_against_the_service(served: Any, tmp_path: Path) -> None:
    url, token_file = served
    out = tmp_path / "demo.json"
    result = CliRunner().invoke(cli_app, ["demo", "--customers", "3000", "--k", "3",
                                          "--workers", "1", "--centre", url,
                                          "--centre-token-file", str(token_file),
                                          "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["ari_vs_sklearn"] >= 0.999
    bad = CliRunner().invoke(cli_app, ["demo", "--customers", "3000", "--centre",
                                       f"http://127.0.0.1:{free_port()}"])
    assert bad.exit_code == 2
    assert "cannot reach the compute centre" in _plain(bad.output)


def test_bench_transport_writes_ratios_and_a_plot(tmp_path: Path) -> None:
    out = tmp_path / "transport.json"
    result = CliRunner().invoke(cli_app, ["bench", "transport", "--customers", "2000", "--k",
                                          "3", "--iterations", "2", "--repeats", "2",
                                          "--json", str(out)])
    assert result.exit_code == 0, result.output
    bench = json.loads(out.read_text())
    assert len(bench["pair_ratios_http_vs_in_process"]) == 2
    assert bench["ari_http_vs_in_process"] == 1.0
    assert all(r["n_iter"] == 2 for mode in bench["runs"].values() for r in mode)
    assert out.with_suffix(".png").stat().st_size > 0


def _self_signed(directory: Path) -> tuple[str, str]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cipherseg test centre")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "centre.pem", directory / "centre.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_over_tls_the_owner_verifies_the_centre(tmp_path: Path, X: np.ndarray) -> None:
    cert, key = _self_signed(tmp_path)
    token_file = tmp_path / "centre.token"
    with CentreService(token_file, tls=(cert, key)) as url:
        assert url.startswith("https://")
        token = token_file.read_text().strip()
        with HttpTransport(url, token=token, verify=cert) as centre:
            km = EncryptedKMeans(n_clusters=3, init=X[[0, 1, 2]], max_iter=3,
                                 n_jobs=1).fit(X, centre=centre)
        ref = KMeans(n_clusters=3, init=X[[0, 1, 2]], n_init=1, max_iter=3).fit(X)
        assert adjusted_rand_score(ref.labels_, km.labels_) >= 0.999
        # A certificate the owner does not trust is refused before any byte of data leaves.
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            HttpTransport(url, token=token).status()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has stopped
    except FileNotFoundError:
        return True


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("n_jobs", "route"), [(1, "message"), (2, "message"), (2, "status")])
def test_a_dead_centre_process_is_restarted_and_the_owner_told(n_jobs: int, route: str,
                                                               X: np.ndarray) -> None:
    # With a pool, the killed centre's workers still hold its stdout open: waiting for
    # end-of-file would hang the service; the centre process is polled instead.
    with CentreProcess(n_jobs=n_jobs) as link:
        t = _client(link)
        init = X[[0, 1, 2]]
        EncryptedKMeans(n_clusters=3, init=init, max_iter=1, n_jobs=1).fit(X, centre=t)
        before = link.hello()
        assert len(before["worker_pids"]) == (n_jobs if n_jobs > 1 else 0)
        os.kill(before["pid"], signal.SIGKILL)
        with pytest.raises(TransportError, match="stopped and was restarted"):
            t.request_bytes(AN_UPLOAD) if route == "message" else t.status()
        after = link.hello()
        assert after["pid"] != before["pid"]
        assert all(_gone(pid) for pid in before["worker_pids"])  # no orphaned workers
        km = EncryptedKMeans(n_clusters=3, init=init, max_iter=2, n_jobs=1).fit(X, centre=t)
        assert len(np.unique(km.labels_)) == 3  # the new process serves a whole fit


def test_the_service_sweeps_idle_sessions_periodically() -> None:
    class Counting(_Link):
        hellos = 0

        def hello(self) -> dict[str, Any]:
            Counting.hellos += 1
            return {}

    app = create_centre_app(Counting(RuntimeError()), token=TOKEN, sweep_seconds=0.05)
    with TestClient(app):  # runs the app's lifespan
        deadline = time.monotonic() + 10
        while Counting.hellos < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert Counting.hellos >= 3


def test_the_centre_process_drops_idle_sessions() -> None:
    owner = CkksSecretContext.generate(CkksParams.for_depth(1))
    upload = p.Upload(protocol_version=p.VERSION, session_id="quiet", round=1,
                      public_context=owner.public_bytes(), n_samples=1, n_features=1,
                      n_clusters=1, block_sizes=(1,),
                      features=(owner.encrypt_to_bytes(np.zeros(1)),))
    # 2 s: the reply and the next hello must come back within it on a loaded machine.
    with CentreProcess(n_jobs=1, session_idle_seconds=2.0) as centre:
        centre.request_bytes(upload.to_bytes())
        assert centre.hello()["sessions"] == 1
        time.sleep(2.5)
        assert centre.hello()["sessions"] == 0
