"""KD losses against values worked out by hand."""

import math

import pytest
import torch

from reptiledistil.methods.losses import kd_loss, soft_kd_term, task_loss


def test_kl_term_hand_computed():
    s = torch.tensor([[0.0, math.log(3.0)]])  # softmax(s/1) = [1/4, 3/4]
    t = torch.tensor([[0.0, 0.0]])  # softmax(t/1) = [1/2, 1/2]
    # KL(p_t || p_s) = 1/2 log((1/2)/(1/4)) + 1/2 log((1/2)/(3/4)) = 1/2 log(4/3)
    assert soft_kd_term(s, t, 1.0, False).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


def test_temperature_scales_logits_and_multiplies_by_t_squared():
    s = torch.tensor([[0.0, 2 * math.log(3.0)]])  # s/2 = [0, log 3]
    t = torch.tensor([[0.0, 0.0]])
    assert soft_kd_term(s, t, 2.0, False).item() == pytest.approx(4 * 0.5 * math.log(4 / 3), rel=1e-6)


def test_kl_is_batch_mean():
    s = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    t = torch.zeros(2, 2)  # second row: identical distributions, KL 0
    assert soft_kd_term(s, t, 1.0, False).item() == pytest.approx(0.25 * math.log(4 / 3), rel=1e-6)


def test_kd_loss_mixes_task_and_kd_terms():
    s = torch.tensor([[0.0, math.log(3.0)]])
    t = torch.tensor([[0.0, 0.0]])
    y = torch.tensor([1])
    ce = -math.log(0.75)
    kl = 25 * 0.5 * (math.log(0.5 / (1 / (1 + 3 ** 0.2))) + math.log(0.5 / (3 ** 0.2 / (1 + 3 ** 0.2))))
    got = kd_loss(s, t, y, alpha=0.3, temperature=5.0, regression=False).item()
    assert got == pytest.approx(0.7 * ce + 0.3 * kl, rel=1e-5)
    assert kd_loss(s, t, y, alpha=0.0, temperature=5.0, regression=False).item() == pytest.approx(ce, rel=1e-6)


def test_regression_uses_mse_against_teacher_not_zero_kl():
    s = torch.tensor([[1.0], [3.0]])
    t = torch.tensor([[2.0], [1.0]])
    y = torch.tensor([1.5, 2.0])
    mse_task = ((1 - 1.5) ** 2 + (3 - 2) ** 2) / 2
    mse_kd = ((1 - 2) ** 2 + (3 - 1) ** 2) / 2  # = 2.5, independent of T
    assert task_loss(s, y, True).item() == pytest.approx(mse_task)
    for T in (1.0, 5.0):
        got = kd_loss(s, t, y, alpha=0.5, temperature=T, regression=True).item()
        assert got == pytest.approx(0.5 * mse_task + 0.5 * mse_kd)


def test_kd_gradient_flows_to_student_only():
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    kd_loss(s, t.detach(), torch.tensor([0, 1, 2, 0]), 0.5, 5.0, False).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
