import pytest
import torch

from dann import grad_reverse
from dann.models import GradReverse


@pytest.mark.parametrize("coeff", [0.0, 0.3, 1.0, 2.5])
def test_forward_is_identity_and_gradient_is_minus_coeff_times_grad(coeff):
    x = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    y = grad_reverse(x, coeff)
    assert torch.equal(y, x)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, -coeff * upstream)


def test_grl_is_stateless_and_reversing_twice_restores_the_gradient():
    x = torch.randn(4, requires_grad=True)
    grad_reverse(grad_reverse(x, 2.0), 0.5).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(4))  # (-2) * (-0.5) = 1
    assert not hasattr(GradReverse, "step")  # no hidden counter to forget in checkpoints
