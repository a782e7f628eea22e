"""Time windows, category shares and choosing k, each against a plaintext reference.

Recency is counted from the window's end (never from the day the test runs); shares are
checked against a direct loop over the lines; the recommended k is the silhouette's argmax
and finds planted clusters."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import silhouette_score

from cipherseg.analytics.behaviour import category_shares
from cipherseg.analytics.segmentation import choose_k, inertia_and_silhouette, recommend_k
from cipherseg.analytics.window import TimeWindow
from cipherseg.errors import ValidationError
from cipherseg.platform.services.segmentation import latest_day, window_features

END = date(2025, 6, 30)


def _tx(rows: list[tuple[str, date, float, str | None]]) -> pd.DataFrame:
    return pd.DataFrame({"customer": [r[0] for r in rows],
                         "invoice": [f"T{i}" for i in range(len(rows))],
                         "date": pd.to_datetime([r[1] for r in rows]),
                         "amount": [r[2] for r in rows],
                         "category": [r[3] for r in rows]})


def test_recency_counts_from_the_window_end_and_rows_outside_are_left_out() -> None:
    tx = _tx([("a", END - timedelta(days=3), 10.0, "food"),
              ("a", END + timedelta(days=5), 99.0, "food"),      # after the window
              ("b", date(2024, 1, 1), 20.0, "toys"),             # before the window
              ("b", END - timedelta(days=40), 30.0, "toys")])
    window = TimeWindow(start=date(2025, 1, 1), end=END).resolve(latest_day(tx))
    feats = window_features(tx, window)
    # snapshot: midnight after the window's last day (a purchase on that day: recency 1)
    assert feats.loc["a"].tolist() == [4.0, 1.0, 10.0]
    assert feats.loc["b"].tolist() == [41.0, 1.0, 30.0]
    # the last N days end on the latest purchase on record, whatever today is
    last10 = TimeWindow(days=10).resolve(latest_day(tx))
    assert (last10.start, last10.end) == (END - timedelta(days=4), END + timedelta(days=5))
    assert window_features(tx, last10).loc["a", "recency"] == 1.0
    with pytest.raises(ValidationError, match="no purchases in the window"):
        window_features(tx, TimeWindow(end=date(2020, 1, 1)).resolve(latest_day(tx)))


def test_window_words_and_bad_windows() -> None:
    assert TimeWindow(days=90).label() == "last 90 days"
    assert TimeWindow.from_dict(TimeWindow(start=END).to_dict()) == TimeWindow(start=END)
    for bad, words in (({"days": 0}, "between 1 and"), ({"days": 5000}, "between 1 and"),
                       ({"start": END, "end": END - timedelta(days=1)}, "after its end"),
                       ({"start": END, "days": 3}, "not both")):
        with pytest.raises(ValidationError, match=words):
            TimeWindow(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="after the latest purchase"):
        TimeWindow(start=END).resolve(END - timedelta(days=1))
    with pytest.raises(ValidationError, match="ISO dates"):
        TimeWindow.from_dict({"from": "yesterday"})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.floats(-5, 100),
                          st.sampled_from(["food", "toys", "home", None])),
                min_size=1, max_size=40),
       st.integers(1, 3))
def test_category_shares_match_a_loop_over_the_lines(
        lines: list[tuple[str, float, str | None]], top_n: int) -> None:
    tx = pd.DataFrame(lines, columns=["customer", "amount", "category"])
    positive = [(c, a, cat) for c, a, cat in lines if a > 0]
    if not any(cat is not None for _, _, cat in positive):
        with pytest.raises(ValidationError):
            category_shares(tx, top_n=top_n)
        return
    got = category_shares(tx, top_n=top_n)
    spend: dict[str, float] = {}
    for _, a, cat in positive:
        if cat is not None:
            spend[cat] = spend.get(cat, 0.0) + a
    top = sorted(spend, key=lambda c: (-spend[c], c))[:top_n]
    assert list(got.columns) == [f"share:{c}" for c in top]
    for customer in sorted({c for c, _, _ in positive}):
        total = sum(a for c, a, _ in positive if c == customer)
        for cat in top:
            want = sum(a for c, a, k in positive if c == customer and k == cat) / total
            assert got.loc[customer, f"share:{cat}"] == pytest.approx(want, abs=1e-9)
    assert ((got >= 0) & (got <= 1)).all().all()


def test_recommend_k_and_the_owners_measures() -> None:
    assert recommend_k([2, 3, 4], [0.3, None, 0.3]) == 2
    with pytest.raises(ValidationError, match="too alike"):
        recommend_k([2], [None])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    labels = (X[:, 0] > 0).astype(int)
    inertia, sil = inertia_and_silhouette(X, labels)
    ref = sum(((X[labels == i] - X[labels == i].mean(axis=0)) ** 2).sum() for i in (0, 1))
    assert inertia == pytest.approx(ref)
    assert sil == pytest.approx(silhouette_score(X, labels))
    assert inertia_and_silhouette(X, np.zeros(50, dtype=int))[1] is None


@pytest.mark.slow
def test_choose_k_finds_planted_segments_through_the_encrypted_protocol() -> None:
    """Three well-separated groups of customers: the silhouette peaks at k = 3."""
    rng = np.random.default_rng(5)
    groups = [(5.0, 30.0, 800.0), (60.0, 6.0, 120.0), (300.0, 1.0, 30.0)]
    rows = [tuple(v * float(np.exp(rng.normal(0, 0.08))) for v in g)
            for g in groups for _ in range(40)]
    feats = pd.DataFrame(rows, columns=["recency", "frequency", "monetary"],
                         index=pd.Index([f"c{i:03d}" for i in range(120)], name="customer"))
    choice = choose_k(feats, ks=range(2, 6), random_state=1, max_iter=50)
    assert choice.ks == [2, 3, 4, 5] and choice.recommended == 3
    best = choice.results[3]
    assert sorted(np.bincount(best.model.labels_).tolist()) == [40, 40, 40]
    assert best.ari_vs_sklearn == 1.0
    assert choice.to_dict()["recommended"] == 3
