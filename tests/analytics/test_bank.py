"""Bank Marketing loading, validation and preprocessing."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from bank_data import DATA, needs_data
from cipherseg.analytics.bank import (
    LEAKY_FEATURE,
    SCHEMAS,
    load_bank,
    make_preprocessor,
    numeric_moments,
    preprocessor_from_moments,
    read_bank_csv,
    split_bank,
)
from cipherseg.errors import ParameterError, ValidationError

HEADER = ('"age";"job";"marital";"education";"default";"balance";"housing";"loan";"contact";'
          '"day";"month";"duration";"campaign";"pdays";"previous";"poutcome";"y"\n')
ROW = '58;"management";"married";"tertiary";"no";2143;"yes";"no";"unknown";5;"may";261;1;-1;0;' \
      '"unknown";"no"\n'


@needs_data
@pytest.mark.parametrize(("variant", "rows", "positives", "encoded"), [
    ("bank-full", 45211, 5289, 50),
    ("bank-additional-full", 41188, 4640, 64),
])
def test_load_real_files(variant, rows, positives, encoded):
    data = load_bank(DATA, variant)
    assert data.n_customers == rows and int(data.target.sum()) == positives
    assert LEAKY_FEATURE not in data.features.columns
    assert data.customer_ids[:3].tolist() == [0, 1, 2]
    with_d = load_bank(DATA, variant, with_duration=True)
    assert LEAKY_FEATURE in with_d.numeric
    Z = make_preprocessor(data).fit_transform(data.features)
    assert Z.shape == (rows, encoded)
    assert np.all(np.isfinite(Z))


@needs_data
def test_split_is_stratified_and_seeded():
    data = load_bank(DATA, "bank-full")
    train, test = split_bank(data, seed=0)
    again, _ = split_bank(data, seed=0)
    assert train.n_customers + test.n_customers == data.n_customers
    assert abs(train.positive_rate - test.positive_rate) < 0.002
    assert np.array_equal(train.customer_ids, again.customer_ids)
    assert not set(train.customer_ids) & set(test.customer_ids)


def test_moments_preprocessor_equals_pooled_standard_scaler():
    data = read_bank_csv(io.StringIO(HEADER + ROW * 3 + ROW.replace("2143", "-50").replace(
        ";5;", ";17;")), variant="bank-full", with_duration=True)
    halves = [data.subset([0, 1]), data.subset([2, 3])]
    moments = sum(numeric_moments(h) for h in halves)
    pre = preprocessor_from_moments(halves[0], moments)
    pooled = make_preprocessor(data).fit(data.features)
    assert np.allclose(pre.transform(data.features), pooled.transform(data.features))
    scaler = StandardScaler().fit(data.features[list(data.numeric)])
    assert np.allclose(pre.transform(data.features)[:, -len(data.numeric):],
                       scaler.transform(data.features[list(data.numeric)]))
    with pytest.raises(ValidationError, match="moments"):
        preprocessor_from_moments(data, np.zeros((2, 3)))


def test_gzip_and_plain_csv(tmp_path):
    (tmp_path / "bank-full.csv").write_text(HEADER + ROW)
    assert load_bank(tmp_path, "bank-full").n_customers == 1
    with gzip.open(tmp_path / "bank-full.csv.gz", "wt") as fh:
        fh.write(HEADER + ROW + ROW)
    assert load_bank(tmp_path, "bank-full").n_customers == 2


@pytest.mark.parametrize(("text", "match"), [
    (HEADER + ROW.replace('"management"', '"astronaut"'), "outside the documented"),
    (HEADER + ROW.replace("2143", "lots"), "'balance' must be numeric"),
    (HEADER + ROW.replace('"no"\n', '"maybe"\n'), "'y' must be"),
    (HEADER.replace('"balance";', "") + ROW, "lacks column"),
])
def test_bad_csv(text, match):
    with pytest.raises(ValidationError, match=match):
        read_bank_csv(io.StringIO(text), variant="bank-full")


def test_bad_arguments(tmp_path):
    with pytest.raises(ParameterError, match="unknown Bank Marketing file"):
        load_bank(tmp_path, "bank-tiny")
    with pytest.raises(ValidationError, match="not found"):
        load_bank(tmp_path, "bank-full")
    data = read_bank_csv(io.StringIO(HEADER + ROW * 4), variant="bank-full")
    with pytest.raises(ParameterError):
        split_bank(data, test_size=1.5)


def test_schemas_are_the_published_ones():
    assert len(SCHEMAS["bank-full"]) == 16
    assert len(SCHEMAS["bank-additional-full"]) == 20
    assert SCHEMAS["bank-full"]["poutcome"] == ("failure", "other", "success", "unknown")
