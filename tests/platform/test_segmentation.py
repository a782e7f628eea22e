"""Segmentation jobs: encrypted k-means equals plaintext k-means from the same start; the
compute centre runs in its own process without keys, PII code or platform secrets; small
segments never reach merchants."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sqlalchemy import select

from cipherseg.errors import ParameterError, ProtocolError, TransportError
from cipherseg.hosting.centre_process import CentreProcess, CentreProcessError
from cipherseg.platform.models import Job, Role, User
from cipherseg.platform.segments import release_view
from cipherseg.platform.services.segmentation import run_encrypted_kmeans
from cipherseg.testing.centre_service import CentreService

FORBIDDEN_IN_CENTRE = ("cipherseg.pii", "cipherseg.schemes.ckks_keys",
                       "cipherseg.protocols.outsourced.owner", "cipherseg.platform.core",
                       "cipherseg.platform.db", "cipherseg.platform.models")


def _blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(c, 0.3, (60, 3)) for c in ((0, 0, 0), (3, 0, 1), (0, 3, 2))])


@pytest.mark.slow
@pytest.mark.parametrize("centre", ["process", "service"])
def test_encrypted_job_matches_plaintext_kmeans_with_the_centre_elsewhere(
        splatform, centre: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Tolerance: ARI = 1 against scikit-learn from the same initial centres, centroids within
    1e-3 (CKKS noise ~1e-6 on data normalised to |x| <= 1, times the scale). The centre runs
    as the platform's child process, or as a `cipherseg centre serve` service over HTTP."""
    settings = splatform.ctx.settings
    settings.centre_process = True
    X = np.round(_blobs(), 2)
    stages: list[str] = []
    with contextlib.ExitStack() as stack:
        if centre == "service":
            settings.centre_token_file = tmp_path / "centre.token"
            settings.centre_url = stack.enter_context(CentreService(settings.centre_token_file))
        run = run_encrypted_kmeans(splatform.ctx, X, 3, lambda s, d, t: stages.append(s),
                                   seed=1)
    expected_where = {"process": "separate process", "service": "compute centre service at"}
    assert run["where"].startswith(expected_where[centre])
    ref = KMeans(n_clusters=3, init=run["init_centers"], n_init=1, max_iter=100,
                 tol=1e-4).fit(X)
    assert adjusted_rand_score(ref.labels_, run["labels"]) == 1.0
    assert np.abs(np.sort(ref.cluster_centers_, axis=0) -
                  np.sort(run["centers"], axis=0)).max() < 1e-3
    assert {"encrypt", "init", "iterate"} <= set(stages)


def test_centre_process_holds_no_key_no_pii_code_and_no_platform_secret(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CIPHERSEG_PII_KEY", "ab" * 32)
    monkeypatch.setenv("CIPHERSEG_DATABASE_URL", "postgresql://secret@db/x")
    with CentreProcess(n_jobs=1) as centre:
        status = centre.hello()
        assert status["holds_secret_key"] is False
        assert status["env_cipherseg"] == []
        loaded = status["modules"]
        assert "cipherseg.protocols.outsourced.centre" in loaded
        for mod in FORBIDDEN_IN_CENTRE:
            assert not any(m == mod or m.startswith(mod + ".") for m in loaded), mod
        # The centre's refusal keeps its class; a dead process is a CentreProcessError.
        with pytest.raises(ProtocolError, match=r"compute centre: .*magic"):
            centre.request_bytes(b"not a protocol message")
        assert centre.hello()["pid"] == status["pid"]  # still serving after an error
        os.kill(status["pid"], signal.SIGKILL)
        with pytest.raises(CentreProcessError, match="stopped unexpectedly"):
            centre.hello()


def test_an_unreachable_centre_service_is_a_clear_error(
        splatform, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = splatform.ctx.settings
    settings.centre_url = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(TransportError, match="cannot reach the compute centre"):
        run_encrypted_kmeans(splatform.ctx, np.round(_blobs(), 2), 3, lambda s, d, t: None)
    (tmp_path / "short.token").write_text("abc")
    settings.centre_token_file = tmp_path / "short.token"
    with pytest.raises(ParameterError, match="shorter than 16 characters"):
        run_encrypted_kmeans(splatform.ctx, np.round(_blobs(), 2), 3, lambda s, d, t: None)


def test_job_reports_clear_errors(splatform) -> None:  # type: ignore[no-untyped-def]
    owner = splatform.client("mall")
    r = owner.post("/owner/jobs", {"k": "3", "features": ["recency"], "scheme": "ckks"})
    assert r.status_code == 400 and "upload customers" in r.text
    r = owner.post("/owner/jobs", {"k": "3", "features": ["recency"], "scheme": "plain"})
    assert r.status_code == 400 and "not offered" in r.text
    r = owner.post("/owner/jobs", {"k": "99", "features": ["recency"], "scheme": "ckks"})
    assert r.status_code == 400 and "between 2 and" in r.text
    r = owner.post("/owner/jobs", {"k": "3", "features": ["shoe size"], "scheme": "ckks"})
    assert r.status_code == 400 and "at least one feature" in r.text


def test_job_fails_with_a_reason_when_there_are_no_transactions(splatform) -> None:  # type: ignore[no-untyped-def]
    owner = splatform.client("mall")
    owner.upload("customers", "c.csv", b"customer_id,phone,consent\nC1,13800138000,yes\n"
                                       b"C2,13800138001,no\n")
    splatform.run_jobs()
    r = owner.post("/owner/jobs", {"k": "2", "features": ["recency", "frequency"],
                                   "scheme": "ckks"})
    splatform.run_jobs()
    page = owner.get(r.headers["location"]).text
    assert 'id="job-status">failed' in page and "no transactions" in page


def test_disabled_centre_account_stops_segmentations(splatform) -> None:  # type: ignore[no-untyped-def]
    with splatform.ctx.sessions() as s:
        s.scalars(select(User).where(User.username == "centre")).one().active = False
        s.commit()
    owner = splatform.client("mall")
    owner.upload("customers", "c.csv", b"customer_id,phone,consent\nC1,13800138000,yes\n")
    splatform.run_jobs()
    owner.post("/owner/jobs", {"k": "2", "features": ["recency"], "scheme": "ckks"})
    splatform.run_jobs()
    with splatform.ctx.sessions() as s:
        job = s.scalars(select(Job).where(Job.kind == "segmentation")).one()
        assert job.status == "failed" and "service account" in (job.error or "")


def test_centre_service_account_is_created_when_missing(splatform) -> None:  # type: ignore[no-untyped-def]
    from cipherseg.platform.services.segmentation import centre_account

    with splatform.ctx.sessions() as s:
        user = centre_account(s, "centre-2")
        assert user.role == Role.CENTRE.value and user.active
    assert splatform.client().login("centre-2", "").status_code == 400


class _Seg:
    def __init__(self, position: int, size: int) -> None:
        self.position, self.size, self.name = position, size, f"s{position}"
        self.centroid = {"monetary": float(size)}


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 400), min_size=1, max_size=12),
       min_size=st.integers(1, 120))
def test_merchants_never_see_a_group_smaller_than_the_minimum(sizes: list[int],
                                                               min_size: int) -> None:
    segs = [_Seg(i, n) for i, n in enumerate(sizes)]
    views = release_view(segs, min_size=min_size)
    shown = [v.size for v in views if v.size is not None]
    assert all(n >= min_size for n in shown)
    assert all(v.profile is None for v in views if v.name == "other")
    total_shown = sum(shown)
    if total_shown:
        assert abs(sum(v.share for v in views) - 1.0) < 1e-9
    # the hidden remainder cannot be derived: shares are of the customers shown only
    small = sum(n for n in sizes if n < min_size)
    if 0 < small < min_size:
        assert all(v.size is None for v in views if v.name == "other")
