"""GLUE metrics with torchmetrics (offline; synced across processes under DDP).

Classification metrics take predicted class ids, regression metrics the raw score.
The selection metric (used to pick the best epoch) is the mean of the task's `selection` metrics.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Accuracy, F1Score, Metric, MetricCollection, PearsonCorrCoef, SpearmanCorrCoef
from torchmetrics.classification import BinaryMatthewsCorrCoef

from .tasks import Task


class GlueMCC(BinaryMatthewsCorrCoef):
    """MCC as GLUE (scikit-learn) defines it: 0 when the confusion matrix has an empty row or column.

    torchmetrics returns a limit value there instead, which is > 0 for a model that always predicts the
    majority class: a collapsed CoLA model would score above a real one and could be selected as best.
    """

    def compute(self) -> torch.Tensor:
        tn, fp, fn, tp = self.confmat.double().reshape(-1)  # already summed over processes
        denom = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)).sqrt()
        if denom == 0:
            return torch.zeros((), device=denom.device)
        return ((tp * tn - fp * fn) / denom).float()


def _make(name: str, task: Task) -> Metric:
    if name == "accuracy":
        return Accuracy(task="multiclass", num_classes=task.num_labels)
    if name == "f1":  # F1 of the positive class, as GLUE reports for MRPC and QQP
        return F1Score(task="binary")
    if name == "macro_f1":  # unweighted mean of the per-class F1 (task=custom: its classes have no "positive" one)
        return F1Score(task="multiclass", num_classes=task.num_labels, average="macro")
    if name == "mcc":
        return GlueMCC()
    if name == "pearson":
        return PearsonCorrCoef()
    if name == "spearman":
        return SpearmanCorrCoef()
    raise KeyError(name)


def build_metrics(task: Task, prefix: str = "") -> MetricCollection:
    return MetricCollection({m: _make(m, task) for m in task.metrics}, prefix=prefix)


def predictions(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """Class ids for classification, the (single) score for regression."""
    return logits.squeeze(-1).float() if task.is_regression else logits.argmax(-1)


def compute_metrics(task: Task, preds: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Metrics of a whole split at once (used by predict.py and tests)."""
    mc = build_metrics(task)
    mc.update(preds, labels)
    return {k: float(v) for k, v in mc.compute().items()}


UNDEFINED = "undefined (constant predictions or labels)"


def format_metrics(results: dict[str, float], prefix: str = "", percent: bool = False, sep: str = "=") -> str:
    """`name=value, ...` for the metrics under `prefix`. A correlation of constant predictions is undefined (NaN):
    it is said so in words, never printed like a score."""
    def show(v: float) -> str:
        return UNDEFINED if math.isnan(v) else f"{100 * v:.1f}" if percent else f"{v:.4f}"

    return ", ".join(f"{k[len(prefix):]}{sep}{show(v)}" for k, v in results.items()
                     if k.startswith(prefix) and k not in ("epoch", "step"))


def selection_score(task: Task, results: dict[str, float], prefix: str = "") -> float:
    """Mean of the task's selection metrics (CoLA: MCC; MRPC/QQP: F1 and accuracy; STS-B: Pearson and Spearman)."""
    return sum(results[prefix + m] for m in task.selection) / len(task.selection)
