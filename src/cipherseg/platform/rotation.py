"""PII key rotation: new active data key, re-encrypt every ciphertext, retire the old keys.

Crash-safe order: (1) the keyring file gains the new key (old keys kept) and is written;
(2) ciphertexts are re-encrypted in committed batches; (3) only when no ciphertext uses an
old key any more is the keyring rewritten without them. A crash at any point leaves every
ciphertext decryptable; running the command again finishes the job.

Tables with encrypted columns are listed in :data:`ENCRYPTED_COLUMNS` (the campaign code
appends its own). Pseudonyms (HMAC) are not rotated: they are join keys.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from cipherseg.errors import KeyCustodyError
from cipherseg.pii.keys import PiiKeyring, load_or_create_keyring, write_secret_file
from cipherseg.pii.vault import PiiVault
from cipherseg.platform import audit
from cipherseg.platform.core.config import Settings
from cipherseg.platform.models import Customer, Job, JobKind, JobStatus, Transaction


class FileBackedVault(PiiVault):
    """A vault that reloads its keyring file when it changes (so a running server follows a
    rotation: it encrypts under the new key at once and keeps decrypting)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp = self._stat()
        super().__init__(load_or_create_keyring(path))

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self._path)
        return st.st_mtime_ns, st.st_ino

    def _refresh(self) -> None:
        try:
            stamp = self._stat()
        except FileNotFoundError:
            return
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    ring: PiiKeyring = load_or_create_keyring(self._path)
                    PiiVault.__init__(self, ring)
                    self._stamp = stamp

    def encrypt(self, field: str, value: str, *, context: str) -> bytes:
        self._refresh()
        return super().encrypt(field, value, context=context)

    def decrypt(self, field: str, blob: bytes, *, context: str) -> str:
        self._refresh()
        return super().decrypt(field, blob, context=context)


@dataclass(frozen=True)
class EncryptedColumn:
    """A column of vault ciphertexts: model, column, vault field, and the column(s) whose
    values, joined by "/", are the ciphertext's context."""

    model: Any
    column: str
    field: str
    context_column: str | tuple[str, ...]

    @property
    def context_columns(self) -> tuple[str, ...]:
        c = self.context_column
        return (c,) if isinstance(c, str) else c


ENCRYPTED_COLUMNS: list[EncryptedColumn] = [
    EncryptedColumn(Customer, "phone_ct", "phone", "pseudonym"),
    EncryptedColumn(Customer, "first_name_ct", "first_name", "pseudonym"),
    # purchases: date, amount and category (cipherseg.platform.purchases.context)
    EncryptedColumn(Transaction, "payload_ct", "purchase", ("owner_id", "external_id")),
]


@dataclass
class RotationReport:
    old_key_ids: list[str]
    new_key_id: str
    reencrypted: int
    retired: bool


def rotate_pii_key(settings: Settings, engine: Engine, *, batch: int = 1000,
                   progress: Callable[[int, int], None] | None = None,
                   actor_name: str = "cli") -> RotationReport:
    """Rotate the PII data key stored in the keyring file of ``settings``."""
    if settings.pii_keyring_from_env:
        raise KeyCustodyError("the PII key comes from CIPHERSEG_PII_KEY: rotate it where it is "
                              "stored (write the keyring to a file and point "
                              "CIPHERSEG_PII_KEY_FILE at it to let cipherseg rotate it)")
    path = settings.pii_keyring_path
    ring = load_or_create_keyring(path)
    old_ids = sorted(ring.data_keys)
    new_ring = ring.with_new_active_key()
    write_secret_file(path, new_ring.to_json())
    vault = PiiVault(new_ring)
    factory: sessionmaker[Session] = sessionmaker(engine)
    total = 0
    with factory() as s:
        for ec in ENCRYPTED_COLUMNS:
            col = getattr(ec.model, ec.column)
            total += s.query(ec.model).filter(col.is_not(None)).count()
    done = 0
    for ec in ENCRYPTED_COLUMNS:
        pk = ec.model.id
        col = getattr(ec.model, ec.column)
        ctx_cols = [getattr(ec.model, c) for c in ec.context_columns]
        last = None
        while True:
            with factory() as s:
                stmt = select(pk, col, *ctx_cols).where(col.is_not(None)).order_by(pk).limit(
                    batch)
                if last is not None:
                    stmt = stmt.where(pk > last)
                rows = s.execute(stmt).all()
                if not rows:
                    break
                updates = [{"id": row[0], ec.column: vault.reencrypt(
                    ec.field, row[1], context="/".join(str(v) for v in row[2:]))}
                    for row in rows]
                s.execute(update(ec.model), updates)
                s.commit()
                last = rows[-1][0]
                done += len(rows)
                if progress:
                    progress(done, total)
    # Verify, then retire the old keys.
    leftover = 0
    with factory() as s:
        for ec in ENCRYPTED_COLUMNS:
            col = getattr(ec.model, ec.column)
            for (blob,) in s.execute(select(col).where(col.is_not(None))
                                     .execution_options(yield_per=5000)):
                if vault.key_id_of(blob) != new_ring.active_id:
                    leftover += 1
    with factory() as s:
        importing = s.scalar(select(Job.id).where(
            Job.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value)),
            Job.kind == JobKind.IMPORT.value).limit(1))
    # An import that encrypted rows before the new key appeared may still commit them, and a
    # pending upload is sealed under the old key (platform.sealed_files): keep the old keys
    # until a later run finds nothing left under them and no import waiting.
    retired = leftover == 0 and importing is None
    if retired:
        write_secret_file(path, new_ring.retire_inactive().to_json())
    with factory() as s:
        audit.record(s, "pii_rotate_key", actor=None, actor_name=actor_name,
                     detail={"new_key": new_ring.active_id, "reencrypted": done,
                             "retired_old_keys": retired})
        s.commit()
    return RotationReport(old_ids, new_ring.active_id, done, retired)
