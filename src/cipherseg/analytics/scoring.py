"""Encrypted propensity scoring with a scikit-learn model, and campaign targeting from scores.

:class:`EncryptedScorer` plays the data owner of :mod:`cipherseg.protocols.scoring`: it keeps
the model's preprocessing (the ``Pipeline`` steps before the classifier), encodes and encrypts
the features under a fresh CKKS key, lets an in-process compute centre — which receives only
bytes and a public context — evaluate ``w·x + b``, and decrypts the scores. The score ranks
exactly like the plaintext ``decision_function`` (the sigmoid is monotone), so targeting needs
no probabilities; an optional cubic sigmoid gives approximate probabilities under encryption.

Who knows the model: the owner (it fitted or received it). By default the weights travel to the
centre in plaintext — the centre then knows the model but still no customer value; with
``encrypt_model=True`` the centre learns only the number of weights.

>>> import numpy as np
>>> from sklearn.linear_model import LogisticRegression
>>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
>>> model = LogisticRegression().fit(X, [0, 0, 1, 1])
>>> scores = EncryptedScorer(model).score(X)
>>> bool(np.allclose(scores, model.decision_function(X), atol=1e-6))
True
>>> select_top_n(scores, [10, 11, 12, 13], 2).customer_ids
(13, 12)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from cipherseg.errors import ParameterError, ValidationError
from cipherseg.protocols.party import PartyLink, TransferStats
from cipherseg.protocols.scoring import (
    OWNER,
    ScoringCentre,
    ScoringOwner,
    ScoringResult,
    SigmoidApproximation,
    sigmoid_params,
)
from cipherseg.schemes.ckks import CkksParams
from cipherseg.schemes.ckks_keys import CkksSecretContext


def split_model(model: Any) -> tuple[Any | None, LogisticRegression]:
    """(preprocessing, logistic regression) of a fitted model or Pipeline ending in one.

    Raises :class:`ValidationError` for anything else (unfitted, multi-class, another
    estimator).

    Examples
    --------
    >>> split_model("not a model")
    Traceback (most recent call last):
    ...
    cipherseg.errors.ValidationError: expected a fitted LogisticRegression or a Pipeline ending \
in one, got str
    """
    pre: Any | None = None
    clf = model
    if isinstance(model, Pipeline):
        if len(model.steps) == 0:
            raise ValidationError("the Pipeline has no steps")
        clf = model.steps[-1][1]
        pre = model[:-1] if len(model.steps) > 1 else None
    if not isinstance(clf, LogisticRegression):
        raise ValidationError(
            "expected a fitted LogisticRegression or a Pipeline ending in one, got "
            f"{type(clf).__name__}"
        )
    try:
        check_is_fitted(clf)
    except NotFittedError as exc:
        raise ValidationError(f"the model is not fitted: call fit first ({exc})") from exc
    if clf.coef_.shape[0] != 1 or len(clf.classes_) != 2:
        raise ValidationError(
            f"encrypted scoring needs a binary classifier; this one has {len(clf.classes_)} "
            "classes"
        )
    return pre, clf


class EncryptedScorer(BaseEstimator):  # type: ignore[misc]
    """Score customers with a fitted logistic regression while their features stay encrypted.

    Parameters
    ----------
    model:
        A fitted ``LogisticRegression`` or a ``Pipeline`` whose last step is one; earlier
        steps run at the owner, in plaintext, before encryption.
    encrypt_model:
        Send weights and bias encrypted, so the compute centre does not learn the model.
    sigmoid_bound:
        If set, also evaluate the degree-3 sigmoid approximation on [-bound, bound] under
        encryption (``predict_proba``); needs depth-3 parameters (chosen automatically).
    decimals:
        Fixed-point quantisation of encoded features before encryption.
    params:
        CKKS parameters; default depth 1 (N=8192, [60, 40, 60]) or depth 3 with the sigmoid.

    Attributes
    ----------
    last_run_ : ScoringResult
        Costs of the last call: bytes each way, seconds per side.
    last_transfer_ : TransferStats
        Message and byte counts of the last call's transport.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    >>> scorer = EncryptedScorer(LogisticRegression().fit(X, [0, 0, 1, 1]))
    >>> scorer.predict(X).tolist()
    [0, 0, 1, 1]
    """

    def __init__(self, model: Any, *, encrypt_model: bool = False,
                 sigmoid_bound: float | None = None, decimals: int = 8,
                 params: CkksParams | None = None) -> None:
        self.model = model
        self.encrypt_model = encrypt_model
        self.sigmoid_bound = sigmoid_bound
        self.decimals = decimals
        self.params = params

    # ------------------------------------------------------------------------------------
    def encode(self, X: Any) -> npt.NDArray[np.float64]:
        """The owner's plaintext preprocessing: what gets encrypted (one column per weight)."""
        pre, clf = split_model(self.model)
        try:
            Z = pre.transform(X) if pre is not None else X
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationError(f"the model's preprocessing rejected the input: {exc}") from exc
        if hasattr(Z, "toarray"):
            Z = Z.toarray()
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != clf.coef_.shape[1]:
            raise ValidationError(
                f"expected {clf.coef_.shape[1]} encoded features per customer, got shape "
                f"{Z.shape}"
            )
        return Z

    def _run(self, X: Any, progress: Callable[[int, int], None] | None) -> ScoringResult:
        _, clf = split_model(self.model)
        Z = self.encode(X)
        if Z.shape[0] == 0:
            raise ValidationError("no customers to score (0 rows)")
        sigmoid = None
        if self.sigmoid_bound is not None:
            sigmoid = SigmoidApproximation.fit(float(self.sigmoid_bound))
        params = self.params or (sigmoid_params() if sigmoid else CkksParams.for_depth(1))
        if not isinstance(params, CkksParams):
            raise ParameterError(f"params must be CkksParams, got {type(params).__name__}")
        keys = CkksSecretContext.generate(params)
        owner = ScoringOwner(keys, clf.coef_[0], float(clf.intercept_[0]),
                             encrypt_model=self.encrypt_model, sigmoid=sigmoid,
                             decimals=self.decimals)
        centre = ScoringCentre()  # receives bytes only; never sees `keys`
        link = PartyLink(centre, sender=OWNER)
        result = owner.run(Z, link, progress)
        self.last_run_ = result
        self.last_transfer_: TransferStats = link.stats
        self.sigmoid_: SigmoidApproximation | None = sigmoid
        return result

    def score(self, X: Any, *, progress: Callable[[int, int], None] | None = None
              ) -> npt.NDArray[np.float64]:
        """Encrypted ``decision_function``: w·x + b per customer, decrypted by the owner.

        Note: unlike scikit-learn's ``score`` (accuracy), this returns the scores.
        """
        return self._run(X, progress).scores

    decision_function = score

    def predict(self, X: Any) -> npt.NDArray[Any]:
        """Class labels from the encrypted scores (score ≥ 0 ⇒ the positive class)."""
        _, clf = split_model(self.model)
        result: npt.NDArray[Any] = clf.classes_[(self.score(X) >= 0).astype(int)]
        return result

    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]:
        """Approximate probabilities computed under encryption (needs ``sigmoid_bound``).

        Columns follow ``classes_`` like scikit-learn. The cubic's error is at most
        ``sigmoid_.max_error`` for scores inside [-bound, bound]; outside it is unbounded,
        so the values are clipped to [0, 1] after decryption.
        """
        if self.sigmoid_bound is None:
            raise ParameterError(
                "predict_proba needs the sigmoid approximation: set sigmoid_bound (e.g. 6.0); "
                "to rank customers use score(), which is exact"
            )
        probs = self._run(X, None).probabilities
        if probs is None:  # pragma: no cover - the owner always asks when sigmoid is set
            raise ValidationError("the centre returned no probabilities")
        p = np.clip(probs, 0.0, 1.0)
        return np.stack([1.0 - p, p], axis=1)


# --- targeting --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Segment:
    """A campaign audience: customer ids chosen by a rule on decrypted scores (owner side).

    Only the owner (and the operator's gateway, for sending) sees ``customer_ids``; the
    merchant gets :meth:`merchant_view`.

    Examples
    --------
    >>> s = Segment("top-2", (7, 3), "top 2 by score")
    >>> s.size
    2
    >>> s.merchant_view(min_segment_size=2)
    {'name': 'top-2', 'rule': 'top 2 by score', 'size': 2}
    """

    name: str
    customer_ids: tuple[int, ...]
    rule: str

    @property
    def size(self) -> int:
        return len(self.customer_ids)

    def refs(self, ref_format: str = "{}") -> tuple[str, ...]:
        """Customer references for the campaign flow (``ref_format`` maps an id to a ref).

        >>> Segment("s", (7, 3), "r").refs("C{:05d}")
        ('C00007', 'C00003')
        """
        return tuple(ref_format.format(i) for i in self.customer_ids)

    def audience(self, source: Any, ref_format: str = "{}") -> list[Any]:
        """The segment's recipients from a messaging ``RecipientSource``, best-scored first.

        Customers the source no longer knows (erased, no phone) are left out. The result is
        what :meth:`cipherseg.messaging.engine.SendingEngine.enqueue` takes per segment:
        ``engine.enqueue(campaign_id, {segment.name: segment.audience(source)})``.

        >>> from cipherseg.messaging.recipients import StaticRecipients
        >>> Segment("s", (7, 3), "r").audience(StaticRecipients([]))
        []
        """
        refs = self.refs(ref_format)
        found = source.lookup(list(refs))
        return [found[r] for r in refs if r in found]

    def merchant_view(self, min_segment_size: int) -> dict[str, Any]:
        """What the merchant may learn: name, rule and size — refused below the minimum size."""
        if self.size < min_segment_size:
            raise ValidationError(
                f"segment {self.name!r} has {self.size} customers, fewer than the minimum "
                f"segment size {min_segment_size}; widen the rule before releasing it"
            )
        return {"name": self.name, "rule": self.rule, "size": self.size}


def _ids_and_scores(scores: npt.ArrayLike, customer_ids: Sequence[int] | npt.ArrayLike
                    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    ids = np.asarray(customer_ids).ravel()
    if s.shape != ids.shape:
        raise ValidationError(
            f"{s.size} scores for {ids.size} customer ids; they must correspond one to one"
        )
    if not np.all(np.isfinite(s)):
        raise ValidationError("scores must be finite numbers")
    if len(np.unique(ids)) != ids.size:
        raise ValidationError("customer ids must be unique")
    return s, ids.astype(np.int64)


def rank_customers(scores: npt.ArrayLike, customer_ids: Sequence[int] | npt.ArrayLike
                   ) -> npt.NDArray[np.int64]:
    """Customer ids from the highest score down (ties: smaller id first).

    Examples
    --------
    >>> rank_customers([0.1, 0.9, 0.1], [5, 6, 4]).tolist()
    [6, 4, 5]
    """
    s, ids = _ids_and_scores(scores, customer_ids)
    order = np.lexsort((ids, -s))
    return ids[order]


def select_top_n(scores: npt.ArrayLike, customer_ids: Sequence[int] | npt.ArrayLike, n: int,
                 *, name: str | None = None) -> Segment:
    """The ``n`` best-scored customers as a segment (all of them if fewer than ``n``).

    Examples
    --------
    >>> select_top_n([0.2, 0.8, 0.5], [1, 2, 3], 2).customer_ids
    (2, 3)
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ParameterError(f"n must be a positive integer, got {n!r}")
    ranked = rank_customers(scores, customer_ids)[: int(n)]
    return Segment(name or f"top-{int(n)}", tuple(int(i) for i in ranked),
                   f"top {int(n)} by score")


def select_above(scores: npt.ArrayLike, customer_ids: Sequence[int] | npt.ArrayLike,
                 threshold: float, *, name: str | None = None) -> Segment:
    """Customers whose score is ≥ ``threshold``, best first, as a segment.

    Examples
    --------
    >>> select_above([0.2, 0.8, 0.5], [1, 2, 3], 0.5).customer_ids
    (2, 3)
    """
    if not np.isfinite(threshold):
        raise ParameterError(f"threshold must be a finite number, got {threshold!r}")
    s, ids = _ids_and_scores(scores, customer_ids)
    keep = s >= threshold
    ranked = rank_customers(s[keep], ids[keep])
    return Segment(name or f"score>={threshold:g}", tuple(int(i) for i in ranked),
                   f"score >= {threshold:g}")
