"""The calibrated search objective: the teacher's cross-entropy at its best temperature."""
import pytest
import torch

from tmix_aug.search.calibration import calibrated_cross_entropy, fit_inverse_temperature


def overconfident_batch(n: int = 64, classes: int = 10, seed: int = 0):
    """Two-class soft targets, and logits that rank those classes high but are far too sure."""
    generator = torch.Generator().manual_seed(seed)
    lam = torch.rand(n, 1, generator=generator)
    first = torch.randint(0, classes, (n,), generator=generator)
    second = (first + 1 + torch.randint(0, classes - 1, (n,), generator=generator)) % classes
    first, second = (torch.nn.functional.one_hot(c, classes).float() for c in (first, second))
    targets = lam * first + (1 - lam) * second
    logits = 2 * torch.randn(n, classes, generator=generator) + 16 * first + 8 * second
    return logits, targets


def cross_entropy(logits, targets):
    return torch.sum(-targets * logits.log_softmax(-1), -1).mean()


def test_the_fitted_temperature_is_the_minimum_of_a_grid():
    logits, targets = overconfident_batch()
    beta = fit_inverse_temperature(logits, targets)
    grid = torch.logspace(-3, 3, 20001)
    losses = torch.stack([cross_entropy(b * logits, targets) for b in grid])
    assert beta.item() == pytest.approx(grid[losses.argmin()].item(), rel=2e-3)
    assert cross_entropy(beta * logits, targets) <= losses.min() + 1e-6
    assert beta < 1  # these logits are overconfident for their targets


def test_making_the_teacher_unsure_is_not_rewarded():
    logits, targets = overconfident_batch()
    # Shrinking every logit (what blur does to an overconfident teacher) lowers the plain loss...
    assert cross_entropy(0.3 * logits, targets) < cross_entropy(logits, targets)
    # ...but not the calibrated one, which is the same for any scale of the logits.
    loss, beta = calibrated_cross_entropy(logits, targets)
    shrunk_loss, shrunk_beta = calibrated_cross_entropy(0.3 * logits, targets)
    assert shrunk_loss.item() == pytest.approx(loss.item(), abs=1e-5)
    assert shrunk_beta.item() == pytest.approx(beta.item() / 0.3, rel=1e-4)


def test_the_gradient_has_no_component_along_the_logits():
    logits, targets = overconfident_batch()
    logits.requires_grad_(True)
    loss, _ = calibrated_cross_entropy(logits, targets)
    loss.backward()
    along = torch.sum(logits.grad * logits) / (logits.grad.norm() * logits.norm())
    assert abs(along.item()) < 1e-4
    assert logits.grad.norm() > 0


def test_a_teacher_that_is_always_wrong_is_ignored():
    logits, targets = overconfident_batch()
    # Logits lowest where the targets are: the best prediction is the uniform one, beta at its floor.
    assert fit_inverse_temperature(-logits.abs() - 5 * targets, targets).item() == pytest.approx(1e-3, rel=1e-6)


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match="logits/targets"):
        fit_inverse_temperature(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="logits/targets"):
        fit_inverse_temperature(torch.zeros(4), torch.zeros(4))
