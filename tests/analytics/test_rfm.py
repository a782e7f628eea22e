"""RFM features, transaction reading, the owner's scaler and segment names."""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.utils.estimator_checks import parametrize_with_checks

from cipherseg.analytics.rfm import (
    RFMColumns,
    RFMScaler,
    compute_rfm,
    read_transactions,
    segment_names,
)
from cipherseg.analytics.synthetic import generate_mall_transactions
from cipherseg.errors import ParameterError, ValidationError

# ---------------------------------------------------------------- a small hand-computed frame

ROWS = [
    # customer, invoice, timestamp, quantity, price
    ("A", "1", "2025-01-10 12:00", 2, 5.0),     # 10.00
    ("A", "1", "2025-01-10 12:00", 1, 5.5),     # 5.50
    ("A", "2", "2025-01-20 09:30", 4, 5.0),     # 20.00
    ("A", "C3", "2025-01-21 10:00", -1, 5.5),   # cancelled
    ("B", "4", "2025-01-31 23:59", 1, 100.0),   # 100.00
    ("B", "5", "2025-01-05 10:00", 3, 0.0),     # amount 0: dropped as cancelled
    ("C", "6", "2024-12-01 08:00", 1, 7.25),
    ("C", "6", "2024-12-01 08:00", 1, 2.75),
    ("D", "C9", "2025-01-02 11:00", -2, 4.0),   # D has only a cancelled line
    (None, "7", "2025-01-15 10:00", 1, 3.0),    # no customer
    ("  ", "8", "2025-01-16 10:00", 1, 4.0),    # blank customer
]


def small_frame() -> pd.DataFrame:
    df = pd.DataFrame(ROWS, columns=["customer_id", "invoice_id", "timestamp", "quantity",
                                     "price"])
    df["timestamp"] = pd.to_datetime(df["timestamp"])
    df["amount"] = df["quantity"] * df["price"]
    return df


def test_hand_computed_with_given_snapshot() -> None:
    result = compute_rfm(small_frame(), snapshot=pd.Timestamp("2025-02-01"))
    f = result.features
    assert list(f.index) == ["A", "B", "C"]
    assert f.index.name == "customer_id"
    assert list(f.columns) == ["recency", "frequency", "monetary"]
    assert all(f.dtypes == np.float64)
    # A: last 01-20 09:30 → 11 d 14.5 h; invoices 1 and 2; (10 + 5.5 + 20) / 2
    assert f.loc["A"].tolist() == [11.0, 2.0, 17.75]
    # B: one minute before the snapshot → 0 days; the zero-amount invoice does not count
    assert f.loc["B"].tolist() == [0.0, 1.0, 100.0]
    # C: 2024-12-01 08:00 → 61 d 16 h; one invoice of two lines
    assert f.loc["C"].tolist() == [61.0, 1.0, 10.0]
    assert result.snapshot == pd.Timestamp("2025-02-01")
    assert result.dropped_missing_customer == 2
    assert result.dropped_cancelled == 3
    assert result.n_transactions_used == 6


def test_default_snapshot_is_last_timestamp_plus_one_day() -> None:
    result = compute_rfm(small_frame())
    assert result.snapshot == pd.Timestamp("2025-02-01 23:59")
    assert result.features["recency"].tolist() == [12.0, 1.0, 62.0]
    assert result.features["frequency"].tolist() == [2.0, 1.0, 1.0]


def test_quantity_times_price_equals_amount_path() -> None:
    tx = small_frame()
    by_amount = compute_rfm(tx.drop(columns=["quantity", "price"]))
    cols = RFMColumns(amount=None, quantity="quantity", price="price")
    by_parts = compute_rfm(tx.drop(columns=["amount"]), cols)
    pd.testing.assert_frame_equal(by_amount.features, by_parts.features)
    assert by_amount.dropped_cancelled == by_parts.dropped_cancelled == 3


def test_quantity_times_price_on_synthetic_data() -> None:
    tx = generate_mall_transactions(400, seed=11)
    by_amount = compute_rfm(tx).features
    cols = RFMColumns(amount=None, quantity="quantity", price="unit_price")
    by_parts = compute_rfm(tx, cols).features
    pd.testing.assert_frame_equal(by_amount, by_parts, rtol=1e-12)


def test_custom_column_names() -> None:
    tx = small_frame().rename(columns={"customer_id": "CustomerID", "invoice_id": "InvoiceNo",
                                       "timestamp": "InvoiceDate", "quantity": "Quantity",
                                       "price": "UnitPrice"}).drop(columns=["amount"])
    cols = RFMColumns(customer="CustomerID", invoice="InvoiceNo", date="InvoiceDate",
                      amount=None, quantity="Quantity", price="UnitPrice")
    result = compute_rfm(tx, cols, snapshot=pd.Timestamp("2025-02-01"))
    assert result.features.index.name == "CustomerID"
    assert result.features.loc["A"].tolist() == [11.0, 2.0, 17.75]
    with pytest.raises(ValidationError, match=r"lack column\(s\) \['amount'\]"):
        compute_rfm(tx, RFMColumns(customer="CustomerID", invoice="InvoiceNo",
                                   date="InvoiceDate"))


def test_matches_a_plain_pandas_reference() -> None:
    """The vectorised code against the textbook groupby formulation."""
    tx = generate_mall_transactions(1500, seed=4)
    result = compute_rfm(tx)
    df = tx.astype({"customer_id": "str", "invoice_id": "str"})
    df = df[df["customer_id"].notna()]
    df = df[~df["invoice_id"].str.startswith("C") & (df["amount"] > 0)]
    snapshot = tx["timestamp"].max() + pd.Timedelta(days=1)
    g = df.groupby("customer_id")
    ref = pd.DataFrame({
        "recency": (snapshot - g["timestamp"].max()).dt.days.astype(np.float64),
        "frequency": g["invoice_id"].nunique().astype(np.float64),
        "monetary": g["amount"].sum() / g["invoice_id"].nunique(),
    })
    got = result.features.copy()
    got.index = got.index.astype("str")
    pd.testing.assert_frame_equal(got, ref, check_names=False, rtol=1e-12)
    assert result.n_transactions_used == len(df)
    assert result.dropped_missing_customer == int(tx["customer_id"].isna().sum())


def test_timezone_aware_timestamps() -> None:
    tx = small_frame()
    tx["timestamp"] = tx["timestamp"].dt.tz_localize("Asia/Shanghai")
    result = compute_rfm(tx, snapshot=pd.Timestamp("2025-02-01", tz="Asia/Shanghai"))
    assert result.features.loc["A"].tolist() == [11.0, 2.0, 17.75]
    with pytest.raises(ParameterError, match="timezone"):
        compute_rfm(tx, snapshot=pd.Timestamp("2025-02-01"))


def test_snapshot_before_a_used_transaction_is_refused() -> None:
    with pytest.raises(ValidationError, match="later than the snapshot"):
        compute_rfm(small_frame(), snapshot=pd.Timestamp("2025-01-15"))


def test_text_dates_and_numbers_are_parsed_strictly() -> None:
    tx = small_frame().astype({"timestamp": "str", "amount": "str"})
    tx["timestamp"] = tx["timestamp"].str.slice(0, 16)
    ok = compute_rfm(tx, snapshot=pd.Timestamp("2025-02-01"))
    assert ok.features.loc["A"].tolist() == [11.0, 2.0, 17.75]
    bad = tx.copy()
    bad.loc[4, "amount"] = "1,000.00"
    with pytest.raises(ValidationError, match=r"'amount'.*index label 4 \('1,000.00'\)"):
        compute_rfm(bad)
    bad = tx.copy()
    bad.loc[2, "timestamp"] = "not a date"
    with pytest.raises(ValidationError, match=r"'timestamp'.*index label 2 \('not a date'\)"):
        compute_rfm(bad)


def test_missing_invoice_id_and_empty_results_raise() -> None:
    tx = small_frame()
    tx.loc[1, "invoice_id"] = None
    with pytest.raises(ValidationError, match=r"'invoice_id'.*missing"):
        compute_rfm(tx)
    only_dirt = small_frame().iloc[[3, 8, 9]]
    with pytest.raises(ValidationError, match=r"no transactions left for RFM.*1 lack a customer"):
        compute_rfm(only_dirt)
    with pytest.raises(ValidationError, match="no transactions"):
        compute_rfm(small_frame().iloc[:0])
    with pytest.raises(ValidationError, match="DataFrame"):
        compute_rfm([1, 2, 3])  # type: ignore[arg-type]


def test_rfm_columns_validation() -> None:
    with pytest.raises(ParameterError, match="not both"):
        RFMColumns(quantity="q", price="p")
    with pytest.raises(ParameterError, match="both quantity and price"):
        RFMColumns(amount=None, quantity="q")
    with pytest.raises(ParameterError, match="non-empty"):
        RFMColumns(customer="")
    with pytest.raises(ParameterError, match="two roles"):
        RFMColumns(customer="x", invoice="x")
    assert RFMColumns(amount=None, quantity="q", price="p").numeric == ("q", "p")


# ---------------------------------------------------------------- reading CSV files

HEADER = "customer_id,invoice_id,timestamp,amount,store\n"


def test_read_csv_keeps_ids_as_text_and_lines_as_index() -> None:
    text = HEADER + "007,0001,2025-01-01 10:00,9.50,north\n\n,2,2025-01-02 11:00,3,south\n"
    tx = read_transactions(io.StringIO(text))
    assert list(tx.columns) == ["customer_id", "invoice_id", "timestamp", "amount"]
    assert tx["customer_id"].iloc[0] == "007" and tx["invoice_id"].iloc[0] == "0001"
    assert tx.index.tolist() == [2, 4]  # the blank line 3 is skipped, numbering kept
    assert tx["amount"].dtype == np.float64
    assert pd.api.types.is_datetime64_dtype(tx["timestamp"])


def test_read_gzip_path_and_buffer_and_plain_path(tmp_path) -> None:
    tx = generate_mall_transactions(300, seed=2)
    plain = tmp_path / "tx.csv"
    tx.to_csv(plain, index=False)
    packed = tmp_path / "tx.csv.gz"
    tx.to_csv(packed, index=False, compression="gzip")
    odd_name = tmp_path / "gzipped.data"
    odd_name.write_bytes(packed.read_bytes())
    expected = compute_rfm(tx).features
    for source in (plain, packed, str(odd_name), io.BytesIO(packed.read_bytes())):
        got = compute_rfm(read_transactions(source)).features
        got.index = got.index.astype(expected.index.dtype)
        pd.testing.assert_frame_equal(got, expected, check_index_type=False)


def test_read_with_other_names_separator_and_date_format(tmp_path) -> None:
    path = tmp_path / "retail.csv"
    path.write_text("InvoiceNo;StockCode;Quantity;InvoiceDate;UnitPrice;CustomerID\n"
                    "536365;85123A;6;12/1/2010 8:26;2.55;17850\n"
                    "C536379;D;-1;12/1/2010 9:41;27.5;14527\n"
                    "536366;22633;6;12/13/2010 8:28;1.85;17850\n")
    cols = RFMColumns(customer="CustomerID", invoice="InvoiceNo", date="InvoiceDate",
                      amount=None, quantity="Quantity", price="UnitPrice")
    tx = read_transactions(path, cols, sep=";", date_format="%m/%d/%Y %H:%M")
    result = compute_rfm(tx, cols)
    assert result.features.index.tolist() == ["17850"]
    assert result.features.loc["17850"].tolist() == [1.0, 2.0, (6 * 2.55 + 6 * 1.85) / 2]
    assert result.dropped_cancelled == 1


def test_missing_column_names_missing_and_found() -> None:
    text = "customer,invoice_id,timestamp,amount\nA,1,2025-01-01,3\n"
    with pytest.raises(ValidationError) as err:
        read_transactions(io.StringIO(text))
    msg = str(err.value)
    assert "['customer_id']" in msg
    assert "found ['customer', 'invoice_id', 'timestamp', 'amount']" in msg


def test_bad_date_names_file_lines() -> None:
    text = (HEADER + "A,1,2025-01-01 10:00,3,x\n" + "A,2,2025-01-02 10:00,3,x\n"
            + "B,3,2025-02-30 10:00,3,x\n" + "B,4,,3,x\n")
    with pytest.raises(ValidationError) as err:
        read_transactions(io.StringIO(text))
    msg = str(err.value)
    assert "'timestamp'" in msg and "2 value(s)" in msg
    assert "file line(s) 4 ('2025-02-30 10:00'), 5 (nan)" in msg


def test_bad_number_names_file_lines_and_counts_the_rest() -> None:
    good = "A,1,2025-01-01 10:00,3,x\n"
    bad_lines = [f"A,{i},2025-01-01 10:00,{v},x\n" for i, v in
                 enumerate(["abc", "1.5.", "inf", "", "--2", "3e", "NaN"])]
    text = HEADER + good + "".join(bad_lines)
    with pytest.raises(ValidationError) as err:
        read_transactions(io.StringIO(text))
    msg = str(err.value)
    assert "'amount': 7 value(s)" in msg
    assert "file line(s) 3 ('abc'), 4 ('1.5.'), 5 ('inf'), 6 (nan), 7 ('--2') and 2 more" in msg


def test_lines_with_surplus_fields_are_refused() -> None:
    text = HEADER + "A,1,2025-01-01 10:00,3,x\nA,2,2025-01-01 10:00,1,000.00,x\n"
    with pytest.raises(ValidationError, match=r"not valid CSV.*line 3"):
        read_transactions(io.StringIO(text))


def test_missing_invoice_and_unreadable_files() -> None:
    with pytest.raises(ValidationError, match=r"'invoice_id': 1 value\(s\) missing at file "
                                              r"line\(s\) 3"):
        read_transactions(io.StringIO(HEADER + "A,1,2025-01-01,3,x\nA,,2025-01-01,3,x\n"))
    with pytest.raises(ValidationError, match="empty"):
        read_transactions(io.StringIO(""))
    with pytest.raises(ValidationError, match="not utf-8"):
        read_transactions(io.BytesIO((HEADER + "Jos\xe9,1,2025-01-01,3,x\n").encode("latin-1")))
    latin = read_transactions(io.BytesIO((HEADER + "Jos\xe9,1,2025-01-01,3,x\n")
                                         .encode("latin-1")), encoding="latin-1")
    assert latin["customer_id"].iloc[0] == "José"
    with pytest.raises(ValidationError, match="not valid CSV"):
        read_transactions(io.StringIO(HEADER + 'A,1,2025-01-01,3,"x\n'))


def test_truncated_gzip_is_an_error(tmp_path) -> None:
    data = gzip.compress((HEADER + "A,1,2025-01-01,3,x\n" * 2000).encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((ValidationError, EOFError, OSError)):
        read_transactions(path)


# ---------------------------------------------------------------- the owner's scaler

rfm_like = arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(1, 4)),
                  elements=st.floats(0.0, 1e6, allow_nan=False, allow_infinity=False))


@settings(max_examples=60, deadline=None)
@given(X=rfm_like, log=st.booleans())
def test_inverse_transform_recovers_input(X: np.ndarray, log: bool) -> None:
    scaler = RFMScaler(log=log).fit(X)
    back = scaler.inverse_transform(scaler.transform(X))
    np.testing.assert_allclose(back, X, rtol=1e-9, atol=1e-9 * max(1.0, float(np.abs(X).max())))


@settings(max_examples=40, deadline=None)
@given(X=rfm_like, log=st.booleans())
def test_serialised_scaler_transforms_identically(X: np.ndarray, log: bool) -> None:
    scaler = RFMScaler(log=log).fit(X)
    loaded = RFMScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(loaded.transform(X), scaler.transform(X))
    Z = scaler.transform(X)
    np.testing.assert_array_equal(loaded.inverse_transform(Z), scaler.inverse_transform(Z))
    assert loaded.get_params() == scaler.get_params()


def test_scaler_standardises_log_features_and_keeps_names() -> None:
    feats = compute_rfm(generate_mall_transactions(500, seed=1)).features
    scaler = RFMScaler().fit(feats)
    Z = scaler.transform(feats)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(Z, (np.log1p(feats) - np.log1p(feats).mean()) / np.log1p(
        feats).std(ddof=0), rtol=1e-12)
    assert list(scaler.get_feature_names_out()) == ["recency", "frequency", "monetary"]
    data = scaler.to_dict()
    assert data["feature_names"] == ["recency", "frequency", "monetary"]
    assert list(RFMScaler.from_dict(data).feature_names_in_) == data["feature_names"]
    out = RFMScaler().set_output(transform="pandas").fit(feats).transform(feats)
    assert list(out.columns) == ["recency", "frequency", "monetary"]


def test_zero_variance_column_gets_unit_scale() -> None:
    X = np.array([[1.0, 5.0], [3.0, 5.0], [7.0, 5.0]])
    scaler = RFMScaler(log=False).fit(X)
    assert scaler.scale_[1] == 1.0
    np.testing.assert_array_equal(scaler.transform(X)[:, 1], 0.0)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(X)), X)


def test_scaler_bad_input() -> None:
    with pytest.raises(ValidationError, match="Negative values"):
        RFMScaler().fit([[1.0, -0.5]])
    RFMScaler(log=False).fit([[1.0, -0.5]])
    with pytest.raises(ParameterError, match="True or False"):
        RFMScaler(log="yes").fit([[1.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        RFMScaler().fit([[1.0, np.nan]])
    fitted = RFMScaler().fit([[1.0, 2.0], [2.0, 3.0]])
    with pytest.raises(ValueError, match="expecting 2 features"):
        fitted.inverse_transform([[1.0, 2.0, 3.0]])
    good = fitted.to_dict()
    for change, pattern in [({"format": "x"}, "not a serialised"),
                            ({"version": 2}, "version 2"),
                            ({"log": "true"}, "'log'"),
                            ({"mean": [0.0]}, "equal length"),
                            ({"scale": [1.0, 0.0]}, "> 0"),
                            ({"mean": [0.0, float("nan")]}, "finite"),
                            ({"mean": "0,0"}, "list of numbers"),
                            ({"feature_names": ["a"]}, "feature_names")]:
        with pytest.raises(ValidationError, match=pattern):
            RFMScaler.from_dict({**good, **change})


@parametrize_with_checks([RFMScaler(), RFMScaler(log=False)])
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


# ---------------------------------------------------------------- segment names


def names_for(rows: list[tuple[float, float, float]]) -> list[str]:
    return segment_names(pd.DataFrame(rows, columns=["recency", "frequency", "monetary"]))


def test_segment_names_follow_the_documented_rules() -> None:
    assert names_for([(5, 20, 500), (200, 1, 40), (10, 1, 60), (40, 4, 90)]) == [
        "champions", "lost", "new customers", "regular customers"]
    assert names_for([(10, 12, 80), (10, 1, 80), (300, 12, 80), (300, 1, 80)]) == [
        "loyal customers", "new customers", "at risk", "hibernating"]
    assert names_for([(60, 3, 900), (60, 3, 60), (60, 30, 200), (60, 8, 200)]) == [
        "big spenders", "occasional customers", "loyal customers", "regular customers"]
    assert names_for([(50, 3, 100)]) == ["regular customers"]


def test_segment_names_are_unique_and_handle_empty_segments() -> None:
    names = names_for([(5, 20, 500), (5, 21, 510), (300, 1, 20), (np.nan, np.nan, np.nan),
                       (5, 20, 505)])
    assert names == ["champions (least frequent)", "champions (most frequent)", "lost",
                     "empty segment", "champions (middle frequency)"]
    assert len(set(names)) == len(names)


def test_segments_sharing_a_name_are_told_apart_by_where_they_differ_most() -> None:
    """Issue 17: a joint run named two segments "occasional customers" and "occasional
    customers 2"; the names now say how they differ (on the feature of largest spread)."""
    names = names_for([(60, 3, 900), (60, 3, 60), (60, 30, 200), (60, 2, 20)])
    assert names == ["big spenders", "occasional customers (higher spend)", "loyal customers",
                     "occasional customers (lower spend)"]
    names = names_for([(5, 20, 300), (9, 21, 310), (300, 1, 20)])
    assert names == ["champions (more recent)", "champions (less recent)", "lost"]
    assert not any(n[-1].isdigit() for n in names)


def test_segment_names_bad_input() -> None:
    with pytest.raises(ValidationError, match="missing column"):
        segment_names(pd.DataFrame({"recency": [1.0]}))
    with pytest.raises(ValidationError, match="≥ 0"):
        names_for([(1, 2, -3)])
    with pytest.raises(ValidationError, match="DataFrame"):
        segment_names([[1, 2, 3]])  # type: ignore[arg-type]


def test_segments_sharing_a_name_are_named_by_the_category_they_buy_most() -> None:
    rfm = pd.DataFrame([(60, 1.5, 110), (62, 1.6, 112), (5, 20, 300)],
                       columns=["recency", "frequency", "monetary"])
    shares = pd.DataFrame({"share:beauty": [0.72, 0.03, 0.2], "share:sports": [0.03, 0.69, 0.2]})
    assert segment_names(rfm, shares) == ["lost (mostly beauty)", "lost (mostly sports)",
                                          "champions"]
    # without a dominant category, recency/frequency/spend tell them apart
    even = pd.DataFrame({"share:beauty": [0.3, 0.3, 0.3], "share:sports": [0.3, 0.3, 0.3]})
    assert segment_names(rfm, even)[:2] == ["lost (less frequent)", "lost (more frequent)"]
