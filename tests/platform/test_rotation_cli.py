"""Key rotation (re-encrypts everything, retires old keys, running servers follow) and the
platform CLI commands."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cipherseg.cli import app as cli_app
from cipherseg.errors import KeyCustodyError
from cipherseg.pii.keys import PiiKeyring
from cipherseg.platform.models import Customer, User
from cipherseg.platform.rotation import rotate_pii_key

CUSTOMERS = b"customer_id,phone,consent,first_name\nC1,13800138000,yes,Li\nC2,+447911123123,no,\n"


def _load_customers(platform) -> None:  # type: ignore[no-untyped-def]
    owner = platform.client("mall")
    owner.upload("customers", "c.csv", CUSTOMERS)
    platform.run_jobs()


def _plain(platform):  # type: ignore[no-untyped-def]
    with platform.ctx.sessions() as s:
        return sorted((c.external_id, platform.ctx.vault.decrypt("phone", c.phone_ct,
                                                                 context=c.pseudonym))
                      for c in s.scalars(select(Customer)))


def test_rotation_reencrypts_everything_and_the_running_app_follows(splatform) -> None:  # type: ignore[no-untyped-def]
    _load_customers(splatform)
    before = _plain(splatform)
    settings = splatform.ctx.settings
    old = PiiKeyring.from_json(settings.pii_keyring_path.read_text())
    report = rotate_pii_key(settings, splatform.ctx.engine)
    assert report.retired and report.reencrypted == 3  # 2 phones + 1 first name
    new = PiiKeyring.from_json(settings.pii_keyring_path.read_text())
    assert list(new.data_keys) == [report.new_key_id] != [old.active_id]
    assert new.pseudonym_key == old.pseudonym_key
    assert settings.pii_keyring_path.stat().st_mode & 0o777 == 0o600
    with splatform.ctx.sessions() as s:
        for c in s.scalars(select(Customer)):
            assert splatform.ctx.vault.key_id_of(c.phone_ct) == report.new_key_id
    assert _plain(splatform) == before  # the app's vault reloaded the keyring file
    # new uploads are encrypted under the new key
    owner = splatform.client("mall")
    owner.upload("customers", "c3.csv", b"customer_id,phone,consent\nC3,13800138003,yes\n")
    splatform.run_jobs()
    with splatform.ctx.sessions() as s:
        c3 = s.scalars(select(Customer).where(Customer.external_id == "C3")).one()
        assert splatform.ctx.vault.key_id_of(c3.phone_ct) == report.new_key_id


def test_rotation_refuses_a_key_from_the_environment(splatform) -> None:  # type: ignore[no-untyped-def]
    from cipherseg.platform.core.config import Settings

    settings = Settings(data_dir=splatform.tmp_path, pii_key="ab" * 32)
    with pytest.raises(KeyCustodyError, match="rotate it where it is stored"):
        rotate_pii_key(settings, splatform.ctx.engine)


@pytest.fixture
def cli_env(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    for var in ("CIPHERSEG_DATABASE_URL", "CIPHERSEG_PII_KEY", "CIPHERSEG_SESSION_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CIPHERSEG_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_cli_db_users_demo_data_and_rotation(cli_env) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    r = runner.invoke(cli_app, ["db", "upgrade"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_app, ["users", "create", "boss", "--role", "admin"],
                      input="a long passphrase\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_app, ["users", "create", "x", "--role", "wizard"], input="a long pass\n")
    assert r.exit_code == 2 and "unknown role" in r.output
    r = runner.invoke(cli_app, ["users", "create", "yo", "--role", "owner"], input="short\n")
    assert r.exit_code == 2 and "at least 10" in r.output
    r = runner.invoke(cli_app, ["users", "list"])
    assert "boss\tadmin\tactive" in r.output
    r = runner.invoke(cli_app, ["db", "demo-data", str(cli_env / "demo"), "--customers", "20"])
    assert r.exit_code == 0 and (cli_env / "demo" / "customers.csv").exists()
    r = runner.invoke(cli_app, ["pii", "rotate-key"])
    assert r.exit_code == 0 and "old keys retired" in r.output, r.output
    from cipherseg.platform.db import make_engine, make_sessionmaker

    engine = make_engine(f"sqlite:///{cli_env / 'data' / 'cipherseg.db'}")
    with make_sessionmaker(engine)() as s:
        assert s.scalars(select(User).where(User.username == "boss")).one().role == "admin"
    ring = json.loads((cli_env / "data" / "keys" / "pii.keyring").read_text())
    assert len(ring["data_keys"]) == 1


def test_cli_set_password(cli_env) -> None:  # type: ignore[no-untyped-def]
    """``users set-password NAME`` reads the new password from stdin, ends the user's
    sessions, clears a pending forced change and is audited."""
    from cipherseg.platform.db import make_engine, make_sessionmaker
    from cipherseg.platform.models import AuditEvent, WebSession
    from cipherseg.platform.security import check_login, open_session

    runner = CliRunner()
    assert runner.invoke(cli_app, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(cli_app, ["users", "create", "mall", "--role", "owner"],
                         input="a long passphrase\n").exit_code == 0
    engine = make_engine(f"sqlite:///{cli_env / 'data' / 'cipherseg.db'}")
    factory = make_sessionmaker(engine)
    with factory() as s:
        user = s.scalars(select(User).where(User.username == "mall")).one()
        open_session(s, user, 8)
        user.must_change_password = True
        s.commit()
    r = runner.invoke(cli_app, ["users", "set-password", "nobody"], input="a new passphrase\n")
    assert r.exit_code == 2 and "no user called 'nobody'" in r.output
    r = runner.invoke(cli_app, ["users", "set-password", "mall"], input="short\n")
    assert r.exit_code == 2 and "at least 10" in r.output
    r = runner.invoke(cli_app, ["users", "set-password", "mall"], input="a new passphrase\n")
    assert r.exit_code == 0 and "sessions were ended" in r.output, r.output
    with factory() as s:
        assert check_login(s, "mall", "a long passphrase") is None
        user = check_login(s, "mall", "a new passphrase")
        assert user is not None and not user.must_change_password
        assert s.scalar(select(WebSession).where(WebSession.user_id == user.id)) is None
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "password_set")).one()
        assert (event.actor_name, event.object_id) == ("cli", "mall")
    engine.dispose()


def test_serve_refuses_an_outdated_schema(cli_env) -> None:  # type: ignore[no-untyped-def]
    r = CliRunner().invoke(cli_app, ["serve", "--port", "1"])
    assert r.exit_code == 2 and "cipherseg db upgrade" in r.output
