"""Differentially private baselines: diffprivlib's logistic regression behind the owner's
preprocessing (objective perturbation, Chaudhuri et al. 2011).

The guarantee is ε-DP for the model's weights given the preprocessing; rows are clipped to
``data_norm``, diffprivlib's sensitivity bound. The evaluation (``cipherseg eval bank``)
compares these models at several ε with the plaintext and encrypted ones.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from cipherseg.analytics.bank import BankData, make_preprocessor
from cipherseg.errors import ParameterError


def clip_rows(X: Any, max_norm: float) -> npt.NDArray[np.float64]:
    """Scale each row to L2 norm ≤ ``max_norm`` (diffprivlib's sensitivity bound ``data_norm``).

    Examples
    --------
    >>> clip_rows(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0).round(6).tolist()
    [[0.6, 0.8], [0.3, 0.4]]
    """
    Z = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    factor = np.minimum(1.0, max_norm / np.maximum(norms, 1e-300))
    clipped: npt.NDArray[np.float64] = Z * factor
    return clipped


def dp_logistic_class() -> type[LogisticRegression]:
    """diffprivlib's LogisticRegression, made constructible under scikit-learn 1.8.

    diffprivlib 0.6.6 passes ``multi_class='ovr'`` to scikit-learn's constructor, an argument
    scikit-learn 1.8 removed: ``LogisticRegression()`` raises ``TypeError`` although the module
    imports. Only ``__init__`` is replaced (binary problems are one-vs-rest anyway); ``fit``
    — the objective-perturbation mechanism and its budget accounting — is diffprivlib's own.
    """
    from diffprivlib.accountant import BudgetAccountant
    from diffprivlib.models import LogisticRegression as DiffprivlibLR

    class DPLogisticRegression(DiffprivlibLR):  # type: ignore[misc]
        def __init__(self, *, epsilon: float = 1.0, data_norm: float | None = None,
                     tol: float = 1e-4, C: float = 1.0, fit_intercept: bool = True,
                     max_iter: int = 100, verbose: int = 0, warm_start: bool = False,
                     n_jobs: int | None = None, random_state: Any = None,
                     accountant: Any = None) -> None:
            LogisticRegression.__init__(
                self, C=C, tol=tol, fit_intercept=fit_intercept, random_state=random_state,
                max_iter=max_iter, verbose=verbose, warm_start=warm_start, n_jobs=n_jobs,
            )
            self.epsilon = epsilon
            self.data_norm = data_norm
            self.accountant = accountant

        def fit(self, X: Any, y: Any, sample_weight: Any = None) -> DPLogisticRegression:
            given = self.accountant
            self.accountant = BudgetAccountant.load_default(given)
            try:
                with warnings.catch_warnings():
                    # diffprivlib passes options SciPy 1.17 deprecates; nothing we can act on.
                    warnings.filterwarnings("ignore", category=DeprecationWarning,
                                            module="diffprivlib")
                    super().fit(X, y)
            finally:
                self.accountant = given
            return self

    return DPLogisticRegression


def make_dp_pipeline(train: BankData, epsilon: float, *, data_norm: float = 3.0, seed: int = 0,
                     max_iter: int = 200) -> Pipeline:
    """Preprocessing, row clipping to ``data_norm``, then diffprivlib's ε-DP logistic regression.

    The guarantee covers the model's weights given the preprocessing. The one-hot categories
    come from the published schema (no data used) but the standardisation's means and
    deviations are computed from the training data without noise, as in diffprivlib's own
    examples: strictly, that part is not private.

    Examples
    --------
    >>> import pandas as pd
    >>> d = BankData("bank-full", pd.DataFrame({"age": [20.0, 30.0, 40.0, 50.0] * 5}),
    ...              np.array([0, 0, 1, 1] * 5), (), ("age",), False)
    >>> make_dp_pipeline(d, 1.0).fit(d.features, d.target)[-1].epsilon
    1.0
    """
    if not np.isfinite(epsilon) or epsilon <= 0:
        raise ParameterError(f"epsilon must be a positive number, got {epsilon}")
    from diffprivlib.accountant import BudgetAccountant

    cls = dp_logistic_class()
    return Pipeline([
        ("preprocess", make_preprocessor(train)),
        ("clip", FunctionTransformer(clip_rows, kw_args={"max_norm": data_norm})),
        ("model", cls(epsilon=epsilon, data_norm=data_norm, random_state=seed,
                      max_iter=max_iter, accountant=BudgetAccountant())),
    ])
