"""Where the tests find UCI Bank Marketing (``CIPHERSEG_BANK_DATA_DIR`` or ../shared/data), a
marker that skips a test without it, and the small split several test modules share."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from cipherseg.analytics.bank import BankData, load_bank, split_bank

DATA = Path(os.environ.get("CIPHERSEG_BANK_DATA_DIR",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data"
                           / "bank-marketing"))
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"Bank Marketing data not at {DATA}")


@functools.cache
def small_split() -> tuple[BankData, BankData]:
    """(train, test) of a stratified 5000-customer slice of bank-additional-full (without
    duration), 70/30. Shared read-only: do not modify."""
    data = load_bank(DATA, "bank-additional-full")
    _, part = split_bank(data, test_size=5000 / data.n_customers, seed=1)
    return split_bank(part, test_size=0.3, seed=0)
