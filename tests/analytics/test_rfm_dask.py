"""RFM on Dask DataFrame equals the pandas path, on files and on adversarial partitions."""

from __future__ import annotations

import gzip
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cipherseg.analytics.rfm import RFMColumns, RFMResult, compute_rfm
from cipherseg.analytics.rfm_dask import compute_rfm_dask, read_transactions_dask
from cipherseg.analytics.synthetic import generate_mall_transactions
from cipherseg.errors import ValidationError


def assert_same_rfm(got: RFMResult, ref: RFMResult) -> None:
    pd.testing.assert_index_equal(got.features.index, ref.features.index)
    np.testing.assert_array_equal(got.features["recency"], ref.features["recency"])
    np.testing.assert_array_equal(got.features["frequency"], ref.features["frequency"])
    # Only the order of the floating-point additions differs.
    np.testing.assert_allclose(got.features["monetary"], ref.features["monetary"], rtol=1e-12)
    assert got.snapshot == ref.snapshot
    assert (got.dropped_missing_customer, got.dropped_cancelled, got.n_transactions_used) == (
        ref.dropped_missing_customer, ref.dropped_cancelled, ref.n_transactions_used)


@pytest.fixture(scope="module")
def mall() -> pd.DataFrame:
    # Guest checkouts (no customer id) and cancellations ("C…" invoices) included.
    tx = generate_mall_transactions(3000, seed=5)
    return tx.astype({"customer_id": "str", "invoice_id": "str"})


@pytest.fixture(scope="module")
def reference(mall: pd.DataFrame) -> RFMResult:
    return compute_rfm(mall)


def _write_parts(tx: pd.DataFrame, folder: Path, kind: str, parts: int = 5) -> None:
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(tx)), parts)):
        part = tx.iloc[rows]
        if kind == "parquet":
            part.to_parquet(folder / f"part-{i}.parquet")
        elif kind == "csv":
            part.to_csv(folder / f"part-{i}.csv", index=False)
        else:
            with gzip.open(folder / f"part-{i}.csv.gz", "wt") as fh:
                part.to_csv(fh, index=False)


@pytest.mark.parametrize("kind", ["parquet", "csv", "csv.gz"])
def test_partitioned_files_give_the_pandas_features(tmp_path: Path, mall: pd.DataFrame,
                                                    reference: RFMResult, kind: str) -> None:
    _write_parts(mall, tmp_path / "tx", kind)
    got = compute_rfm_dask(tmp_path / "tx", blocksize="200KB", scheduler="threads")
    assert reference.dropped_missing_customer > 0 and reference.dropped_cancelled > 0
    assert_same_rfm(got, reference)


def test_quantity_and_price_columns_and_a_given_snapshot(mall: pd.DataFrame) -> None:
    tx = mall.rename(columns={"customer_id": "CustomerID", "invoice_id": "InvoiceNo",
                              "timestamp": "InvoiceDate"}).drop(columns="amount")
    cols = RFMColumns(customer="CustomerID", invoice="InvoiceNo", date="InvoiceDate",
                      amount=None, quantity="quantity", price="unit_price")
    snap = pd.Timestamp("2026-02-01")
    got = compute_rfm_dask(dd.from_pandas(tx, npartitions=4), cols, snapshot=snap,
                           split_out=3, scheduler="sync")
    assert_same_rfm(got, compute_rfm(tx, cols, snapshot=snap))


def test_time_zone_aware_timestamps(mall: pd.DataFrame) -> None:
    tx = mall.assign(timestamp=mall["timestamp"].dt.tz_localize("Asia/Shanghai"))
    got = compute_rfm_dask(dd.from_pandas(tx, npartitions=3), scheduler="sync")
    assert_same_rfm(got, compute_rfm(tx))
    assert str(got.snapshot.tz) == "Asia/Shanghai"


_tx_rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "", None]),               # customer (blank/missing)
        st.sampled_from(["1", "2", "3", "C4", "5", "C6"]),             # invoice ("C": cancelled)
        st.integers(0, 400),                                           # day
        st.integers(0, 86_399),                                        # second of the day
        st.floats(-50, 500, allow_nan=False).map(lambda v: round(v, 2)),  # amount (≤ 0 dropped)
    ),
    min_size=1, max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_tx_rows, npartitions=st.integers(1, 6))
def test_any_partitioning_gives_the_pandas_answer(rows: list[tuple], npartitions: int) -> None:
    # Small alphabets make invoices span partitions and customers share invoices.
    tx = pd.DataFrame(rows, columns=["customer_id", "invoice_id", "day", "sec", "amount"])
    tx["timestamp"] = (pd.Timestamp("2025-01-01") + pd.to_timedelta(tx["day"], unit="D")
                       + pd.to_timedelta(tx["sec"], unit="s"))
    tx = tx.drop(columns=["day", "sec"])
    try:
        ref = compute_rfm(tx)
    except ValidationError as exc:
        with pytest.raises(ValidationError, match="no transactions left"):
            compute_rfm_dask(dd.from_pandas(tx, npartitions=npartitions), scheduler="sync")
        assert "no transactions left" in str(exc)
        return
    got = compute_rfm_dask(dd.from_pandas(tx, npartitions=npartitions), scheduler="sync")
    assert_same_rfm(got, ref)


def test_bad_input_is_refused_with_a_clear_error(tmp_path: Path, mall: pd.DataFrame) -> None:
    with pytest.raises(ValidationError, match="no transaction files"):
        compute_rfm_dask(tmp_path / "missing")
    folder = tmp_path / "bad"
    folder.mkdir()
    bad = mall.head(50).astype({"timestamp": "str"})
    bad.loc[bad.index[7], "timestamp"] = "not a date"
    bad.to_csv(folder / "a.csv", index=False)
    with pytest.raises(ValidationError, match=r"partition 0: .*'timestamp'.*not a date"):
        compute_rfm_dask(folder, scheduler="sync")
    with pytest.raises(ValidationError, match="lack column"):
        compute_rfm_dask(dd.from_pandas(mall.drop(columns="amount"), npartitions=2))
    with pytest.raises(ValidationError, match="later than the snapshot"):
        compute_rfm_dask(dd.from_pandas(mall, npartitions=2), snapshot="2025-01-02",
                         scheduler="sync")
    (tmp_path / "mixed").mkdir()
    mall.head(5).to_csv(tmp_path / "mixed" / "a.csv", index=False)
    mall.head(5).to_parquet(tmp_path / "mixed" / "b.parquet")
    with pytest.raises(Exception, match="mixed CSV and Parquet"):
        read_transactions_dask(tmp_path / "mixed")
