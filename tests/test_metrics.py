"""metrics.py against numbers worked out by hand (plain-Python formulas, never torchmetrics itself)."""

from __future__ import annotations

import math

import pytest
import torch

from reptiledistil.data.metrics import build_metrics, compute_metrics, predictions, selection_score
from reptiledistil.data.tasks import get_task

# Binary example: TP=3 (0, 3, 6), FP=1 (1), FN=1 (4), TN=3 (2, 5, 7).
P = [1, 1, 0, 1, 0, 0, 1, 0]
L = [1, 0, 0, 1, 1, 0, 1, 0]


def confusion(p, l):
    tp = sum(a == 1 and b == 1 for a, b in zip(p, l))
    fp = sum(a == 1 and b == 0 for a, b in zip(p, l))
    fn = sum(a == 0 and b == 1 for a, b in zip(p, l))
    tn = sum(a == 0 and b == 0 for a, b in zip(p, l))
    return tp, fp, fn, tn


def accuracy(p, l):
    return sum(a == b for a, b in zip(p, l)) / len(p)


def f1(p, l):
    tp, fp, fn, _ = confusion(p, l)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def mcc(p, l):
    tp, fp, fn, tn = confusion(p, l)
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


def pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def ranks(x):
    """1-based ranks; tied values share the mean of their ranks."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    r = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x, y):
    return pearson(ranks(x), ranks(y))


def test_hand_formulas_on_the_worked_example():
    # Guard the helpers themselves with the numbers worked out on paper.
    assert accuracy(P, L) == 0.75 and f1(P, L) == 0.75 and mcc(P, L) == 0.5
    assert ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_f1_and_accuracy(task):
    m = compute_metrics(get_task(task), torch.tensor(P), torch.tensor(L))
    assert set(m) == {"f1", "accuracy"}
    assert m["accuracy"] == pytest.approx(accuracy(P, L))
    assert m["f1"] == pytest.approx(f1(P, L))


def test_f1_is_of_the_positive_class():
    p, l = [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]  # positive-class F1 = 0.5, negative-class F1 = 2*2/(2*2+0+2) = 2/3
    m = compute_metrics(get_task("mrpc"), torch.tensor(p), torch.tensor(l))
    assert m["f1"] == pytest.approx(f1(p, l)) == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.6)


def test_cola_mcc():
    m = compute_metrics(get_task("cola"), torch.tensor(P), torch.tensor(L))
    assert set(m) == {"mcc", "accuracy"}
    assert m["mcc"] == pytest.approx(mcc(P, L)) and m["accuracy"] == pytest.approx(0.75)


def test_mcc_unbalanced():
    p, l = [1, 1, 1, 1, 0, 0, 1, 0, 1, 1], [1, 1, 1, 0, 0, 0, 0, 1, 1, 1]
    expected = mcc(p, l)
    assert 0 < expected < 1
    assert compute_metrics(get_task("cola"), torch.tensor(p), torch.tensor(l))["mcc"] == pytest.approx(expected, abs=1e-6)


def test_mcc_of_constant_predictions_is_zero():
    m = compute_metrics(get_task("cola"), torch.ones(6, dtype=torch.long), torch.tensor([1, 0, 1, 1, 0, 1]))
    assert m["mcc"] == pytest.approx(0.0) and m["accuracy"] == pytest.approx(4 / 6)


@pytest.mark.parametrize("p, l", [
    ([1, 1, 1, 1], [1, 1, 1, 1]),  # a single class on both sides
    ([0, 0, 0, 0], [1, 0, 1, 0]),  # predictions all negative
    ([1, 1, 1, 1], [0, 0, 0, 0]),  # all wrong, but a single class: still undefined, so 0
])
def test_mcc_undefined_cases_are_zero_as_in_glue(p, l):
    assert mcc(p, l) == 0.0
    assert compute_metrics(get_task("cola"), torch.tensor(p), torch.tensor(l))["mcc"] == pytest.approx(0.0)


def test_mcc_perfect_and_inverted():
    l = [1, 0, 1, 1, 0]
    assert compute_metrics(get_task("cola"), torch.tensor(l), torch.tensor(l))["mcc"] == pytest.approx(1.0)
    inv = [1 - x for x in l]
    assert compute_metrics(get_task("cola"), torch.tensor(inv), torch.tensor(l))["mcc"] == pytest.approx(-1.0)


def test_mcc_accumulates_over_batches():
    mc = build_metrics(get_task("cola"))
    mc.update(torch.tensor(P[:5]), torch.tensor(L[:5]))
    mc.update(torch.tensor(P[5:]), torch.tensor(L[5:]))
    assert float(mc.compute()["mcc"]) == pytest.approx(mcc(P, L))


def test_multiclass_accuracy():
    p, l = [0, 1, 2, 2, 1], [0, 1, 1, 2, 0]
    m = compute_metrics(get_task("mnli"), torch.tensor(p), torch.tensor(l))
    assert m == {"accuracy": pytest.approx(0.6)}


@pytest.mark.parametrize("task", ["rte", "sst2", "qnli", "wnli"])
def test_accuracy_only_tasks(task):
    m = compute_metrics(get_task(task), torch.tensor(P), torch.tensor(L))
    assert m == {"accuracy": pytest.approx(0.75)}


def test_stsb_pearson_spearman():
    x = [0.5, 2.0, 1.5, 4.0, 3.2, 4.9]
    y = [1.0, 1.8, 2.5, 3.6, 3.0, 5.0]
    m = compute_metrics(get_task("stsb"), torch.tensor(x), torch.tensor(y))
    assert set(m) == {"pearson", "spearman"}
    assert m["pearson"] == pytest.approx(pearson(x, y), abs=1e-5)
    assert m["spearman"] == pytest.approx(spearman(x, y), abs=1e-5)
    assert spearman(x, y) != pytest.approx(pearson(x, y), abs=1e-3)  # the two really differ here


def test_spearman_with_ties():
    x, y = [1.0, 2.0, 2.0, 3.0, 5.0], [1.0, 3.0, 3.0, 2.0, 4.0]
    m = compute_metrics(get_task("stsb"), torch.tensor(x), torch.tensor(y))
    assert m["spearman"] == pytest.approx(spearman(x, y), abs=1e-5)
    assert m["pearson"] == pytest.approx(pearson(x, y), abs=1e-5)


def test_spearman_is_rank_based():
    x = [1.0, 2.0, 3.0, 4.0]
    y = [1.0, 8.0, 27.0, 1000.0]  # monotone but far from linear
    m = compute_metrics(get_task("stsb"), torch.tensor(x), torch.tensor(y))
    assert m["spearman"] == pytest.approx(1.0, abs=1e-6)
    assert m["pearson"] == pytest.approx(pearson(x, y), abs=1e-5) and m["pearson"] < 0.9


def test_metrics_accumulate_over_batches():
    mc = build_metrics(get_task("mrpc"), prefix="dev_")
    mc.update(torch.tensor(P[:3]), torch.tensor(L[:3]))
    mc.update(torch.tensor(P[3:]), torch.tensor(L[3:]))
    out = {k: float(v) for k, v in mc.compute().items()}
    assert out == {"dev_f1": pytest.approx(f1(P, L)), "dev_accuracy": pytest.approx(accuracy(P, L))}


def test_predictions():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    assert predictions(get_task("mnli"), logits).tolist() == [1, 0, 2]
    reg = predictions(get_task("stsb"), torch.tensor([[1.5], [4.25]]))
    assert reg.shape == (2,) and reg.tolist() == [1.5, 4.25] and reg.dtype == torch.float32


def test_selection_score():
    assert selection_score(get_task("mrpc"), {"f1": 0.8, "accuracy": 0.6}) == pytest.approx(0.7)
    assert selection_score(get_task("qqp"), {"dev_f1": 0.9, "dev_accuracy": 0.7}, prefix="dev_") == pytest.approx(0.8)
    assert selection_score(get_task("stsb"), {"pearson": 0.9, "spearman": 0.8}) == pytest.approx(0.85)
    # CoLA selects on MCC alone, even though accuracy is reported too.
    assert selection_score(get_task("cola"), {"mcc": 0.3, "accuracy": 0.9}) == pytest.approx(0.3)
    assert selection_score(get_task("rte"), {"dev_mm_accuracy": 0.1, "accuracy": 0.55}) == pytest.approx(0.55)
    assert selection_score(get_task("mnli"), {"dev_mm_accuracy": 0.4, "dev_accuracy": 0.5},
                           prefix="dev_mm_") == pytest.approx(0.4)
