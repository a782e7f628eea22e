"""UCI Bank Marketing: loading, validation and the owner's preprocessing Pipeline.

Two files are supported, both ``;``-separated and optionally gzipped:

* ``bank-full`` — 45 211 calls, 16 inputs (Moro, Laureano & Cortez, 2011);
* ``bank-additional-full`` — 41 188 calls, 20 inputs including five social and economic
  indicators (Moro, Cortez & Rita, 2014).

The target ``y`` is "did the client subscribe a term deposit". Each row is one customer; its
customer id is its 0-based row number in the file.

**``duration`` leaks the label.** It is the length of the last call, known only after the
call has been made, and a call of 0 seconds always means "no". A model that uses it cannot be
used to choose whom to call; UCI's own description says to keep it for benchmarking only. Every
loader here drops it unless ``with_duration=True`` is asked for explicitly.

Categorical inputs are one-hot encoded with the categories of the published schema (the UCI
description files), not with the categories seen in the data, so several data owners (or a
differentially private trainer) get identical columns without revealing their vocabularies.
Numeric inputs are standardised. The preprocessing is a scikit-learn ``Pipeline`` step that the
data owner keeps; only the encoded, standardised features are encrypted.

>>> import io
>>> csv = io.StringIO(
...     '"age";"job";"marital";"education";"default";"balance";"housing";"loan";"contact";'
...     '"day";"month";"duration";"campaign";"pdays";"previous";"poutcome";"y"\\n'
...     '58;"management";"married";"tertiary";"no";2143;"yes";"no";"unknown";5;"may";261;1;-1;0;'
...     '"unknown";"no"\\n'
...     '44;"technician";"single";"secondary";"no";29;"yes";"no";"unknown";5;"may";151;1;-1;0;'
...     '"unknown";"yes"\\n')
>>> data = read_bank_csv(csv, variant="bank-full")
>>> data.n_customers, data.target.tolist(), "duration" in data.numeric
(2, [0, 1], False)
>>> make_preprocessor(data).fit_transform(data.features).shape
(2, 50)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from cipherseg.errors import ParameterError, ValidationError

LEAKY_FEATURE = "duration"

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_JOBS = ("admin.", "blue-collar", "entrepreneur", "housemaid", "management", "retired",
         "self-employed", "services", "student", "technician", "unemployed", "unknown")

# The published schemas (bank-names.txt, bank-additional-names.txt), in file column order.
# Categorical columns map to their documented categories; numeric ones to None.
SCHEMAS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "bank-full": {
        "age": None,
        "job": _JOBS,
        "marital": ("divorced", "married", "single"),
        "education": ("primary", "secondary", "tertiary", "unknown"),
        "default": ("no", "yes"),
        "balance": None,
        "housing": ("no", "yes"),
        "loan": ("no", "yes"),
        "contact": ("cellular", "telephone", "unknown"),
        "day": None,
        "month": _MONTHS,
        "duration": None,
        "campaign": None,
        "pdays": None,
        "previous": None,
        "poutcome": ("failure", "other", "success", "unknown"),
    },
    "bank-additional-full": {
        "age": None,
        "job": _JOBS,
        "marital": ("divorced", "married", "single", "unknown"),
        "education": ("basic.4y", "basic.6y", "basic.9y", "high.school", "illiterate",
                      "professional.course", "university.degree", "unknown"),
        "default": ("no", "unknown", "yes"),
        "housing": ("no", "unknown", "yes"),
        "loan": ("no", "unknown", "yes"),
        "contact": ("cellular", "telephone"),
        "month": _MONTHS,
        "day_of_week": ("mon", "tue", "wed", "thu", "fri"),
        "duration": None,
        "campaign": None,
        "pdays": None,
        "previous": None,
        "poutcome": ("failure", "nonexistent", "success"),
        "emp.var.rate": None,
        "cons.price.idx": None,
        "cons.conf.idx": None,
        "euribor3m": None,
        "nr.employed": None,
    },
}
FILES: dict[str, str] = {
    "bank-full": "bank-full.csv.gz",
    "bank-additional-full": "bank-additional-full.csv.gz",
}
VARIANTS: tuple[str, ...] = tuple(SCHEMAS)


@dataclass(frozen=True)
class BankData:
    """Customers of one Bank Marketing file: inputs, target and the column roles.

    ``features`` is indexed by customer id (row number in the file); ``target`` is 1 where the
    customer subscribed. Build it with :func:`load_bank` or :func:`read_bank_csv`.

    Examples
    --------
    >>> import pandas as pd, numpy as np
    >>> d = BankData("bank-full", pd.DataFrame({"age": [30, 40]}), np.array([0, 1]),
    ...              categorical=(), numeric=("age",), with_duration=False)
    >>> d.positive_rate
    0.5
    """

    variant: str
    features: pd.DataFrame
    target: npt.NDArray[np.int64]
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    with_duration: bool

    @property
    def n_customers(self) -> int:
        return len(self.features)

    @property
    def customer_ids(self) -> npt.NDArray[np.int64]:
        return np.asarray(self.features.index, dtype=np.int64)

    @property
    def positive_rate(self) -> float:
        return float(np.mean(self.target)) if len(self.target) else 0.0

    @property
    def categories(self) -> list[list[str]]:
        """Documented categories of each categorical column, in ``categorical`` order."""
        schema = SCHEMAS[self.variant]
        return [list(schema[c] or ()) for c in self.categorical]

    def subset(self, rows: npt.ArrayLike) -> BankData:
        """The customers at positions ``rows`` (ids are kept)."""
        idx = np.asarray(rows, dtype=np.int64)
        return BankData(self.variant, self.features.iloc[idx], self.target[idx],
                        self.categorical, self.numeric, self.with_duration)


def _check_variant(variant: str) -> None:
    if variant not in SCHEMAS:
        raise ParameterError(
            f"unknown Bank Marketing file {variant!r}; choose one of {', '.join(VARIANTS)}"
        )


def read_bank_csv(source: str | os.PathLike[str] | IO[str], *, variant: str,
                  with_duration: bool = False) -> BankData:
    """Read and validate one Bank Marketing CSV (``;``-separated; ``.gz`` is decompressed).

    Every column of the published schema must be present, numeric columns must be numbers and
    categorical ones must use the documented categories; otherwise :class:`ValidationError`
    names the column and the first bad values.

    Examples
    --------
    >>> import io
    >>> read_bank_csv(io.StringIO('"age";"y"\\n30;"no"\\n'), variant="bank-full")
    Traceback (most recent call last):
    ...
    cipherseg.errors.ValidationError: bank-full CSV lacks column(s) job, marital, education, \
default, balance, housing, loan, contact, day, month, duration, campaign, pdays, previous, \
poutcome; is this the right file (';'-separated, with a header row)?
    """
    _check_variant(variant)
    try:
        frame = pd.read_csv(source, sep=";")
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, EOFError) as exc:
        raise ValidationError(f"cannot read the {variant} CSV: {exc}") from exc
    schema = SCHEMAS[variant]
    missing = [c for c in (*schema, "y") if c not in frame.columns]
    if missing:
        raise ValidationError(
            f"{variant} CSV lacks column(s) {', '.join(missing)}; is this the right file "
            "(';'-separated, with a header row)?"
        )
    y = frame["y"].astype(str)
    bad_y = sorted(set(y) - {"yes", "no"})
    if bad_y:
        raise ValidationError(f"column 'y' must be 'yes' or 'no'; found {bad_y[:5]}")
    columns: dict[str, Any] = {}
    for name, cats in schema.items():
        if name == LEAKY_FEATURE and not with_duration:
            continue
        col = frame[name]
        if cats is None:
            num = pd.to_numeric(col, errors="coerce")
            bad = col[num.isna() | ~np.isfinite(num.astype(float))]
            if len(bad):
                raise ValidationError(
                    f"column {name!r} must be numeric; {len(bad)} bad value(s), first at row "
                    f"{int(bad.index[0])}: {bad.iloc[0]!r}"
                )
            columns[name] = num.astype(np.float64)
        else:
            text = col.astype(str)
            unknown = sorted(set(text) - set(cats))
            if unknown:
                raise ValidationError(
                    f"column {name!r} has value(s) {unknown[:5]} outside the documented "
                    f"categories {list(cats)}"
                )
            columns[name] = text
    features = pd.DataFrame(columns)
    features.index = pd.RangeIndex(len(features), name="customer_id")
    categorical = tuple(c for c in features.columns if schema[c] is not None)
    numeric = tuple(c for c in features.columns if schema[c] is None)
    target = (y.to_numpy() == "yes").astype(np.int64)
    return BankData(variant, features, target, categorical, numeric, with_duration)


def load_bank(data_dir: str | os.PathLike[str], variant: str = "bank-additional-full", *,
              with_duration: bool = False) -> BankData:
    """Load ``<data_dir>/<variant>.csv.gz`` (or the uncompressed ``.csv``), validated.

    Examples
    --------
    >>> load_bank("/nonexistent", "bank-full")
    Traceback (most recent call last):
    ...
    cipherseg.errors.ValidationError: Bank Marketing file bank-full.csv.gz not found in \
/nonexistent; pass the directory holding the UCI files
    """
    _check_variant(variant)
    folder = Path(data_dir)
    candidates = [folder / FILES[variant], folder / FILES[variant].removesuffix(".gz")]
    for path in candidates:
        if path.is_file():
            return read_bank_csv(path, variant=variant, with_duration=with_duration)
    raise ValidationError(
        f"Bank Marketing file {FILES[variant]} not found in {folder}; pass the directory "
        "holding the UCI files"
    )


def split_bank(data: BankData, *, test_size: float = 0.2, seed: int = 0
               ) -> tuple[BankData, BankData]:
    """Stratified train/test split with a fixed seed.

    Examples
    --------
    >>> import pandas as pd, numpy as np
    >>> d = BankData("bank-full", pd.DataFrame({"age": np.arange(10.0)}),
    ...              np.array([0, 1] * 5), (), ("age",), False)
    >>> train, test = split_bank(d, test_size=0.2)
    >>> train.n_customers, test.n_customers, int(test.target.sum())
    (8, 2, 1)
    """
    if not 0.0 < test_size < 1.0:
        raise ParameterError(f"test_size must be in (0, 1), got {test_size}")
    rows = np.arange(data.n_customers)
    train, test = train_test_split(rows, test_size=test_size, stratify=data.target,
                                   random_state=seed)
    return data.subset(np.sort(train)), data.subset(np.sort(test))


def make_preprocessor(data: BankData) -> ColumnTransformer:
    """One-hot (documented categories) + standardised numerics, as a ColumnTransformer.

    Examples
    --------
    >>> import pandas as pd, numpy as np
    >>> d = BankData("bank-full", pd.DataFrame({"age": [20.0, 40.0]}), np.array([0, 1]),
    ...              (), ("age",), False)
    >>> make_preprocessor(d).fit_transform(d.features).ravel().tolist()
    [-1.0, 1.0]
    """
    return ColumnTransformer(
        [("categorical", OneHotEncoder(categories=data.categories, sparse_output=False,
                                       handle_unknown="error"), list(data.categorical)),
         ("numeric", StandardScaler(), list(data.numeric))],
        verbose_feature_names_out=False,
    )


def make_logistic_pipeline(data: BankData, *, C: float = 1.0, max_iter: int = 2000,
                           class_weight: str | None = None) -> Pipeline:
    """The owner's model: preprocessing followed by scikit-learn's LogisticRegression.

    Examples
    --------
    >>> import pandas as pd, numpy as np
    >>> d = BankData("bank-full", pd.DataFrame({"age": [20.0, 30.0, 40.0, 50.0]}),
    ...              np.array([0, 0, 1, 1]), (), ("age",), False)
    >>> make_logistic_pipeline(d).fit(d.features, d.target).predict(d.features).tolist()
    [0, 0, 1, 1]
    """
    return Pipeline([
        ("preprocess", make_preprocessor(data)),
        ("model", LogisticRegression(C=C, max_iter=max_iter, class_weight=class_weight)),
    ])


# --- preprocessing from aggregate statistics (several owners) ------------------------------

def numeric_moments(data: BankData) -> npt.NDArray[np.float64]:
    """Per numeric column: [count, sum, sum of squares] — what an owner shares to standardise.

    Examples
    --------
    >>> import pandas as pd, numpy as np
    >>> d = BankData("bank-full", pd.DataFrame({"age": [1.0, 3.0]}), np.array([0, 1]),
    ...              (), ("age",), False)
    >>> numeric_moments(d).tolist()
    [[2.0, 4.0, 10.0]]
    """
    x = data.features[list(data.numeric)].to_numpy(dtype=np.float64)
    n = np.full(x.shape[1], float(x.shape[0]))
    return np.stack([n, x.sum(axis=0), (x * x).sum(axis=0)], axis=1)


def standardise(x: Any, mean: npt.NDArray[np.float64], scale: npt.NDArray[np.float64]
                ) -> npt.NDArray[np.float64]:
    """(x - mean) / scale, column-wise (a FunctionTransformer body; picklable)."""
    return (np.asarray(x, dtype=np.float64) - mean) / scale


def preprocessor_from_moments(data: BankData, moments: npt.ArrayLike) -> ColumnTransformer:
    """A fitted preprocessor whose standardisation comes from summed :func:`numeric_moments`.

    The result transforms exactly as :func:`make_preprocessor` fitted on the pooled data
    (same means and population standard deviations), yet needs only the aggregate moments.
    ``data`` supplies the column roles (any owner's frame: fitting reads no values).

    Examples
    --------
    >>> import pandas as pd, numpy as np
    >>> d = BankData("bank-full", pd.DataFrame({"age": [20.0, 40.0]}), np.array([0, 1]),
    ...              (), ("age",), False)
    >>> pre = preprocessor_from_moments(d, numeric_moments(d))
    >>> pre.transform(d.features).ravel().tolist()
    [-1.0, 1.0]
    """
    m = np.asarray(moments, dtype=np.float64)
    if m.shape != (len(data.numeric), 3) or np.any(m[:, 0] <= 0):
        raise ValidationError(
            f"moments must have shape ({len(data.numeric)}, 3) with positive counts; "
            f"got shape {m.shape}"
        )
    mean = m[:, 1] / m[:, 0]
    var = np.maximum(m[:, 2] / m[:, 0] - mean * mean, 0.0)
    scale = np.where(var > 0, np.sqrt(var), 1.0)
    pre = ColumnTransformer(
        [("categorical", OneHotEncoder(categories=data.categories, sparse_output=False,
                                       handle_unknown="error"), list(data.categorical)),
         ("numeric", FunctionTransformer(standardise, kw_args={"mean": mean, "scale": scale},
                                         feature_names_out="one-to-one"),
          list(data.numeric))],
        verbose_feature_names_out=False,
    )
    # Fitting reads only column names: categories are fixed and the scaler is a function.
    return pre.fit(data.features.iloc[:1])
