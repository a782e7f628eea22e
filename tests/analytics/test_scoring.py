"""EncryptedScorer on Bank Marketing against scikit-learn, and targeting from scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import cipherseg
from bank_data import DATA, needs_data
from cipherseg.analytics.bank import load_bank, make_logistic_pipeline, split_bank
from cipherseg.analytics.metrics import METRICS, classification_metrics
from cipherseg.analytics.scoring import (
    EncryptedScorer,
    Segment,
    rank_customers,
    select_above,
    select_top_n,
    split_model,
)
from cipherseg.errors import EncodingError, ParameterError, ValidationError

SCORE_TOL = 1e-4    # per customer, absolute (the bound)
METRIC_TOL = 1e-3   # every metric (the bound)


@pytest.fixture(scope="module")
def bank():
    data = load_bank(DATA, "bank-additional-full", with_duration=False)
    train, test = split_bank(data, seed=0)
    model = make_logistic_pipeline(train).fit(train.features, train.target)
    # A stratified sample of the test split keeps the test fast (the full split is in the
    # evaluation output).
    rng = np.random.default_rng(0)
    pos = np.flatnonzero(test.target == 1)
    neg = np.flatnonzero(test.target == 0)
    rows = np.sort(np.concatenate([rng.choice(pos, 300, replace=False),
                                   rng.choice(neg, 2300, replace=False)]))
    return model, test.subset(rows)


@needs_data
def test_encrypted_scores_equal_plaintext_on_bank_sample(bank):
    model, sample = bank
    scorer = cipherseg.EncryptedScorer(model)
    enc = scorer.score(sample.features)
    ref = model.decision_function(sample.features)
    assert enc.shape == ref.shape
    assert np.max(np.abs(enc - ref)) < SCORE_TOL
    m_enc = classification_metrics(sample.target, enc)
    m_ref = classification_metrics(sample.target, ref)
    for k in METRICS:
        assert abs(m_enc[k] - m_ref[k]) <= METRIC_TOL, k
    assert scorer.last_run_.n_blocks == 1
    assert scorer.last_transfer_.messages == 2


@needs_data
def test_encrypted_model_mode_and_predict(bank):
    model, sample = bank
    part = sample.features.iloc[:500]
    scorer = EncryptedScorer(model, encrypt_model=True)
    assert np.max(np.abs(scorer.score(part) - model.decision_function(part))) < SCORE_TOL
    assert (scorer.predict(part) == model.predict(part)).mean() >= 0.998


@needs_data
def test_predict_proba_with_cubic_sigmoid(bank):
    model, sample = bank
    part = sample.features.iloc[:400]
    scorer = EncryptedScorer(model, sigmoid_bound=6.0)
    proba = scorer.predict_proba(part)
    ref = model.predict_proba(part)
    scores = model.decision_function(part)
    inside = np.abs(scores) <= 6.0
    assert proba.shape == ref.shape
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.max(np.abs(proba[inside, 1] - ref[inside, 1])) <= scorer.sigmoid_.max_error + 1e-4
    with pytest.raises(ParameterError, match="sigmoid_bound"):
        EncryptedScorer(model).predict_proba(part)


def test_bare_logistic_regression_and_diffprivlib_model():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    y = (X @ [1.0, -2.0, 0.5, 0.0] + rng.normal(scale=0.5, size=300) > 0).astype(int)
    lr = LogisticRegression().fit(X, y)
    assert np.max(np.abs(EncryptedScorer(lr).score(X) - lr.decision_function(X))) < SCORE_TOL

    from cipherseg.analytics.dp_logistic import dp_logistic_class

    dp = dp_logistic_class()(epsilon=1.0, data_norm=4.0, random_state=0).fit(
        np.clip(X, -2, 2), y)
    assert np.max(np.abs(EncryptedScorer(dp).score(X) - dp.decision_function(X))) < SCORE_TOL


def test_pipeline_preprocessing_runs_at_owner():
    rng = np.random.default_rng(4)
    X = rng.normal(loc=100.0, scale=30.0, size=(200, 3))
    y = (X[:, 0] > 100).astype(int)
    pipe = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())]).fit(X, y)
    scorer = EncryptedScorer(pipe)
    assert np.allclose(scorer.encode(X), pipe[:-1].transform(X))
    assert np.max(np.abs(scorer.score(X) - pipe.decision_function(X))) < SCORE_TOL


def test_bad_models_and_inputs():
    X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 2.0], [5.0, 1.0]])
    with pytest.raises(ValidationError, match="not fitted"):
        EncryptedScorer(LogisticRegression()).score(X)
    with pytest.raises(ValidationError, match="LogisticRegression"):
        EncryptedScorer(KMeans(2).fit(X)).score(X)
    with pytest.raises(ValidationError, match="binary"):
        EncryptedScorer(LogisticRegression().fit(X, [0, 0, 1, 1, 2, 2])).score(X)
    with pytest.raises(ValidationError):
        split_model(Pipeline([("scale", StandardScaler())]).fit(X))
    model = LogisticRegression().fit(X, [0, 0, 0, 1, 1, 1])
    with pytest.raises(ValidationError, match="2 encoded features"):
        EncryptedScorer(model).score(np.ones((3, 3)))
    with pytest.raises(ValidationError, match="0 rows"):
        EncryptedScorer(model).score(np.ones((0, 2)))
    with pytest.raises(EncodingError):
        EncryptedScorer(model).score(np.array([[np.nan, 1.0]]))
    with pytest.raises(ParameterError):
        EncryptedScorer(model, params="ckks").score(X)


@needs_data
def test_pipeline_rejects_unknown_category(bank):
    model, sample = bank
    bad = sample.features.iloc[:3].copy()
    bad.loc[bad.index[0], "job"] = "astronaut"
    with pytest.raises(ValidationError, match="preprocessing"):
        EncryptedScorer(model).score(bad)


# --- targeting ---------------------------------------------------------------------------------

def test_top_n_and_threshold_segments():
    scores = np.array([0.3, 2.5, -1.0, 2.5, 0.9])
    ids = np.array([10, 11, 12, 13, 14])
    top = select_top_n(scores, ids, 3)
    assert top.customer_ids == (11, 13, 14)  # tie at 2.5 broken by smaller id
    assert top.size == 3 and top.rule == "top 3 by score"
    assert select_top_n(scores, ids, 99).size == 5
    above = select_above(scores, ids, 0.9, name="keen")
    assert above.customer_ids == (11, 13, 14) and above.name == "keen"
    assert select_above(scores, ids, 10.0).size == 0
    assert rank_customers(scores, ids).tolist() == [11, 13, 14, 10, 12]


def test_targeting_matches_plaintext_ranking_on_encrypted_scores():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(500, 3))
    y = (X[:, 0] + 0.3 * rng.normal(size=500) > 0).astype(int)
    lr = LogisticRegression().fit(X, y)
    ids = np.arange(1000, 1500)
    enc = select_top_n(EncryptedScorer(lr).score(X), ids, 50)
    ref = select_top_n(lr.decision_function(X), ids, 50)
    assert len(set(enc.customer_ids) ^ set(ref.customer_ids)) <= 2  # ties within 1e-4 only


def test_targeting_bad_input_and_merchant_view():
    with pytest.raises(ValidationError, match="correspond"):
        select_top_n([1.0, 2.0], [1], 1)
    with pytest.raises(ValidationError, match="unique"):
        select_top_n([1.0, 2.0], [1, 1], 1)
    with pytest.raises(ValidationError, match="finite"):
        select_above([np.nan], [1], 0.0)
    with pytest.raises(ParameterError):
        select_top_n([1.0], [1], 0)
    with pytest.raises(ParameterError):
        select_above([1.0], [1], float("nan"))
    seg = Segment("s", (1, 2, 3), "rule")
    assert seg.merchant_view(3) == {"name": "s", "rule": "rule", "size": 3}
    assert "customer_ids" not in seg.merchant_view(1)
    with pytest.raises(ValidationError, match="minimum segment size"):
        seg.merchant_view(4)


def test_segment_feeds_the_campaign_flow():
    from cipherseg.messaging.recipients import StaticRecipients, seal_recipient
    from cipherseg.pii import PiiKeyring, PiiVault

    vault = PiiVault(PiiKeyring.generate())
    people = [seal_recipient(vault, f"C{i}", f"+86138123456{i:02d}", consent=True, region="CN",
                             customer_id=i) for i in (1, 2, 3)]
    seg = select_top_n([0.1, 0.9, 0.5, 0.7], [1, 2, 3, 4], 3)
    assert seg.customer_ids == (2, 4, 3)
    audience = seg.audience(StaticRecipients(people), ref_format="C{}")
    assert [r.ref for r in audience] == ["C2", "C3"]  # customer 4 has no recipient record
