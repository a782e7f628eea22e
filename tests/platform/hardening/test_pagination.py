"""Finding 11 (issue 16): pagination parameters are validated (422), never a 500."""

from __future__ import annotations

import pytest

from cipherseg.platform.models import Role

HUGE = str(2**63)  # SQLite's integer overflows here (OverflowError -> 500 before the fix)


@pytest.mark.parametrize(("role", "path"), [(Role.ADMIN, "/admin/audit"),
                                            (Role.OWNER, "/owner/customers")])
@pytest.mark.parametrize("offset", [HUGE, "-1", "1e3", "abc", str(10**30)])
def test_bad_offsets_are_refused_with_422(splatform, role, path, offset) -> None:  # type: ignore[no-untyped-def]
    client = splatform.as_role(role)
    r = client.get(f"{path}?offset={offset}")
    assert r.status_code == 422, (path, offset, r.status_code)
    assert "invalid" in r.text.lower()


@pytest.mark.parametrize(("role", "path"), [(Role.ADMIN, "/admin/audit"),
                                            (Role.OWNER, "/owner/customers")])
def test_valid_offsets_still_page(splatform, role, path) -> None:  # type: ignore[no-untyped-def]
    client = splatform.as_role(role)
    assert client.get(f"{path}?offset=0").status_code == 200
    assert client.get(f"{path}?offset=1000000000").status_code == 200


def test_long_filters_are_refused(splatform) -> None:  # type: ignore[no-untyped-def]
    admin = splatform.as_role(Role.ADMIN)
    assert admin.get("/admin/audit?actor=" + "x" * 5000).status_code == 422
