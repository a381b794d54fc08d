"""Reference numbers for the unit tests in crates/graft/src/train/metrics.rs.

Run with `python3 tools/reference/metrics_reference.py` (needs scikit-learn and numpy). The Rust tests embed the
printed numbers as literals; change a case here and the literal there together.

Inputs are written as float64 literals, rounded to float32 (what the Rust accumulators receive), then widened back to
float64 for scikit-learn: the Rust code computes in f64 on the f32 inputs, and scikit-learn would otherwise do some
of the arithmetic in float32 and drift past the tests' 1e-9 tolerance.
"""

import numpy as np
import sklearn
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    top_k_accuracy_score,
)


def f32(values):
    return np.asarray(values, dtype=np.float64).astype(np.float32).astype(np.float64)


def show(name, value):
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        print(f"    {name}: [{', '.join(repr(float(v)) if isinstance(v, float) else repr(v) for v in value)}]")
    else:
        print(f"    {name}: {float(value)!r}")


def classification(title, probs, labels, top_k):
    """All ClassificationMetrics fields. Predicted class = first argmax (numpy rule, same as the Rust code)."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    n_classes = probs.shape[1]
    classes = list(range(n_classes))
    pred = probs.argmax(axis=1)
    print(f"{title} (top_k={top_k})")
    show("accuracy_score", accuracy_score(labels, pred))
    if n_classes == 2:
        # sklearn's binary top-k takes the class-1 score and thresholds it at 0.5 (k=1) -- i.e. the same as argmax
        # over [1-p, p] with ties going to class 0.
        show("top_k_accuracy_score", top_k_accuracy_score(labels, probs[:, 1], k=top_k, labels=classes))
    else:
        show("top_k_accuracy_score", top_k_accuracy_score(labels, probs, k=top_k, labels=classes))
    for avg in ["macro", "micro", "weighted", None]:
        kw = dict(labels=classes, average=avg, zero_division=0)
        suffix = avg or "per_class"
        show(f"precision_score[{suffix}]", precision_score(labels, pred, **kw))
        show(f"recall_score[{suffix}]", recall_score(labels, pred, **kw))
        show(f"f1_score[{suffix}]", f1_score(labels, pred, **kw))
    show("support", np.bincount(labels, minlength=n_classes))
    show("balanced_accuracy_score", balanced_accuracy_score(labels, pred))
    if n_classes == 2:
        show("roc_auc_score(binary, class-1 prob)", roc_auc_score(labels, probs[:, 1]))
        show("average_precision_score(binary, class-1 prob)", average_precision_score(labels, probs[:, 1]))
    else:
        if len(np.unique(labels)) == n_classes:
            show("roc_auc_score(ovr, macro)", roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
        # The Rust code averages over the classes present in the labels (sklearn would count an absent one as 0).
        present = [c for c in classes if (labels == c).any()]
        show(
            "mean of average_precision_score(labels == c, probs[:, c]) over present classes",
            np.mean([average_precision_score(labels == c, probs[:, c]) for c in present]),
        )
    # The per-class one-vs-rest AUCs, for classes where both outcomes occur: the Rust code averages these when a class
    # is missing (where sklearn's multiclass call refuses).
    per_class = [
        roc_auc_score(labels == c, probs[:, c]) for c in classes if 0 < (labels == c).sum() < len(labels)
    ]
    show("mean of defined roc_auc_score(labels == c, probs[:, c])", np.mean(per_class))
    print(f"    confusion_matrix: {confusion_matrix(labels, pred, labels=classes).tolist()}")


# Case 1: three classes, class 2 occurs in the labels but is never predicted; one label is only third (top-2 miss).
PROBS_3 = [
    [0.7, 0.2, 0.1],
    [0.6, 0.3, 0.1],
    [0.2, 0.5, 0.3],
    [0.1, 0.6, 0.3],
    [0.45, 0.15, 0.4],
    [0.3, 0.45, 0.25],
    [0.8, 0.05, 0.15],
    [0.35, 0.4, 0.25],
    [0.5, 0.3, 0.2],
    [0.15, 0.55, 0.3],
]
LABELS_3 = [0, 1, 1, 2, 2, 0, 0, 1, 2, 1]

# Case 2: binary model with a single sigmoid output p, passed as [1-p, p]; p has ties across rows and at 0.5.
P_BIN = [0.1, 0.4, 0.4, 0.35, 0.8, 0.8, 0.5, 0.5, 0.65, 0.2, 0.4, 0.9]
LABELS_BIN = [0, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1]

# Case 3: four classes, every class present; tied scores within columns (OvR AUC) and within rows (top-k ties:
# sklearn ranks the higher class index first among equal scores).
PROBS_4 = [
    [0.4, 0.3, 0.2, 0.1],
    [0.1, 0.6, 0.2, 0.1],
    [0.25, 0.25, 0.4, 0.1],
    [0.1, 0.2, 0.3, 0.4],
    [0.5, 0.1, 0.1, 0.3],
    [0.2, 0.2, 0.2, 0.4],
    [0.3, 0.4, 0.2, 0.1],
    [0.05, 0.15, 0.7, 0.1],
    [0.3, 0.3, 0.1, 0.3],
    [0.1, 0.1, 0.2, 0.6],
    [0.6, 0.1, 0.2, 0.1],
    [0.2, 0.35, 0.25, 0.2],
]
LABELS_4 = [0, 1, 2, 3, 0, 3, 1, 2, 3, 2, 1, 0]
# Case 3b: the same scores, but class 3 never occurs in the labels.
LABELS_4_NO3 = [0, 1, 2, 0, 0, 1, 1, 2, 2, 2, 1, 0]

# Case 4: regression with two outputs; case 4b: the second target column is constant.
PRED_REG = [[1.0, -2.0], [2.5, 0.5], [0.3, 1.2], [4.0, 3.0], [-1.0, 0.0], [2.2, -0.7]]
TARGET_REG = [[1.5, -1.0], [2.0, 0.0], [0.0, 1.0], [3.5, 2.5], [-0.5, 0.25], [2.0, -1.5]]
TARGET_REG_CONST = [[1.5, 2.0], [2.0, 2.0], [0.0, 2.0], [3.5, 2.0], [-0.5, 2.0], [2.0, 2.0]]

# Case 5: multi-label, four labels; a 0.5 score (not positive: threshold is p > 0.5); label 3 is never true and
# never predicted (F1 0 by zero_division=0).
PROBS_ML = [
    [0.9, 0.2, 0.6, 0.1],
    [0.4, 0.7, 0.5, 0.0],
    [0.6, 0.8, 0.1, 0.3],
    [0.2, 0.1, 0.9, 0.2],
    [0.5, 0.55, 0.45, 0.4],
    [0.7, 0.3, 0.8, 0.1],
]
TARGETS_ML = [
    [1, 0, 1, 0],
    [0, 1, 1, 0],
    [1, 0, 0, 0],
    [0, 0, 1, 0],
    [1, 1, 0, 0],
    [1, 0, 1, 0],
]


def main():
    print(f"scikit-learn {sklearn.__version__}, numpy {np.__version__}")
    classification("case 1: 3 classes, class 2 never predicted", f32(PROBS_3), LABELS_3, top_k=2)
    p = np.asarray(P_BIN, dtype=np.float64).astype(np.float32)
    probs_bin = np.stack([np.float32(1) - p, p], axis=1).astype(np.float64)
    classification("case 2: binary, tied scores", probs_bin, LABELS_BIN, top_k=1)
    classification("case 3: 4 classes", f32(PROBS_4), LABELS_4, top_k=2)
    # Row 8 is [0.3, 0.3, 0.1, 0.3] with label 3: argmax says class 0, sklearn's top-1 says class 3.
    show("case 3 top_k_accuracy_score(k=1)", top_k_accuracy_score(LABELS_4, f32(PROBS_4), k=1, labels=[0, 1, 2, 3]))
    classification("case 3b: 4 classes, class 3 absent", f32(PROBS_4), LABELS_4_NO3, top_k=3)

    for title, target in [("case 4: regression", TARGET_REG), ("case 4b: constant 2nd target", TARGET_REG_CONST)]:
        y, yhat = f32(target), f32(PRED_REG)
        print(title)
        show("mean_squared_error", mean_squared_error(y, yhat))
        show("mean_absolute_error", mean_absolute_error(y, yhat))
        show("r2_score(multioutput='uniform_average')", r2_score(y, yhat, multioutput="uniform_average"))

    y = np.asarray(TARGETS_ML)
    yhat = (f32(PROBS_ML) > 0.5).astype(int)
    print("case 5: multi-label")
    show("accuracy_score(Y.ravel(), Yhat.ravel())", accuracy_score(y.ravel(), yhat.ravel()))
    show("accuracy_score(Y, Yhat) (subset)", accuracy_score(y, yhat))
    show("hamming_loss", hamming_loss(y, yhat))
    show("f1_score[macro]", f1_score(y, yhat, average="macro", zero_division=0))
    show("f1_score[micro]", f1_score(y, yhat, average="micro", zero_division=0))
    show("f1_score[per_class]", f1_score(y, yhat, average=None, zero_division=0))
    show("precision_score[per_class]", precision_score(y, yhat, average=None, zero_division=0))
    show("recall_score[per_class]", recall_score(y, yhat, average=None, zero_division=0))
    show("support", y.sum(axis=0))
    # Label 3 is never true: ROC-AUC and AP are averaged over the labels where they are defined.
    p = f32(PROBS_ML)
    show("roc_auc_score(Y[:, :3], P[:, :3], average='macro')", roc_auc_score(y[:, :3], p[:, :3], average="macro"))
    show(
        "average_precision_score(Y[:, :3], P[:, :3], average='macro')",
        average_precision_score(y[:, :3], p[:, :3], average="macro"),
    )


if __name__ == "__main__":
    main()
