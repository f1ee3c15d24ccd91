"""The paper's comparison models, on exactly the same windows and splits.

* :func:`fit_single_flow` — a gradient-boosted tree (scikit-learn's
  ``HistGradientBoostingClassifier``) on the *current flow's* features only
  (:data:`~zeekml.features.flow_stats.FEATURES`, the last window position), i.e. the
  classic single-flow method the paper compares against;
* the plain LSTM without attention is :class:`~zeekml.train.amf_lstm.AmfLstm` with
  ``attention=False`` (same trainer, same weights scheme).

scikit-learn arrives with zat's dependencies; it is used here and in ``tools/``,
never by the runtime.
"""

from __future__ import annotations

import numpy as np

from zeekml.features.flow_stats import N_FEATURES

#: the tree's L2 regularization of leaf values (see :func:`fit_single_flow`)
L2 = 1.0


#: the libraries whose versions a training run's figures depend on (recorded in the card)
LIBRARIES = ("torch", "scikit-learn", "onnxruntime", "numpy", "pandas")


def library_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`LIBRARIES` (None: not installed). A baseline's
    figures moved with scikit-learn's version (see :func:`fit_single_flow`), so the card
    says which ones made them."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def current_flow(x: np.ndarray, n_flow_features: int = N_FEATURES) -> np.ndarray:
    """``[N, F_flow]``: the per-flow features of each window's current (last) flow."""
    return np.ascontiguousarray(x[:, -1, :n_flow_features])


def fit_single_flow(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, n_classes: int, seed: int = 0,
    threads: int = 1, n_flow_features: int = N_FEATURES,
):
    """Fit the single-flow tree; returns an object with ``predict_proba -> [N, n_classes]``."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    keep = y >= 0
    present = np.unique(y[keep])
    if len(present) < 2:  # one class to learn (a fold of benign-only captures): constant
        return _Constant(int(present[0]) if len(present) else 0, n_classes)
    # l2_regularization 1 (XGBoost's default lambda; scikit-learn's is 0): without it a
    # leaf of a rare class whose flows are all predicted right has a hessian near zero and
    # an unbounded value. Measured on the shared corpus (CICIDS2017 2017-07-03 held out):
    # raw predictions up to 3.2e6 with scikit-learn 1.9.1 (589 of its 597 benign flows at
    # P(normal) = 0 exactly: no threshold can rank them, LOCO recall 0), 10.5 with 1.7.2 on
    # the same weights, 1.3e6 with 1.7.2 unweighted; with it 7.9 and 8.1
    clf = HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.1, max_leaf_nodes=31, random_state=seed,
        early_stopping=False, l2_regularization=L2,
    )
    # one OpenMP thread: on a shared, oversubscribed 2-core machine OpenMP's spinning
    # threads made a 2-thread fit 5x slower than a 1-thread one (measured: 82 s vs 14 s)
    with threadpool_limits(limits=threads):
        clf.fit(current_flow(x[keep], n_flow_features), y[keep], sample_weight=weights[keep])
    return _FullProba(clf, n_classes, n_flow_features)


class _FullProba:
    """Pads predict_proba to every class (a class absent from training gets 0)."""

    def __init__(self, clf, n_classes: int, n_flow_features: int = N_FEATURES) -> None:
        self.clf = clf
        self.n_classes = n_classes
        self.n_flow_features = n_flow_features

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.clf.predict_proba(current_flow(x, self.n_flow_features))
        out = np.zeros((len(x), self.n_classes), dtype=np.float64)
        out[:, self.clf.classes_.astype(int)] = p
        return out


class _Constant:
    """The model of a training set with one class: that class, always."""

    def __init__(self, cls: int, n_classes: int) -> None:
        self.cls = cls
        self.n_classes = n_classes

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), self.n_classes), dtype=np.float64)
        out[:, self.cls] = 1.0
        return out
