import pytest
import torch
from torch.nn.utils import parametrize

from codec.nn.layers import Snake1d, WNConv1d, WNConvTranspose1d, fold_weight_norm, init_weight_normed_

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_snake_is_identity_plus_periodic_term():
    torch.manual_seed(0)
    snake = Snake1d(3)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1))
    x = torch.randn(2, 3, 11)
    a = snake.alpha
    torch.testing.assert_close(snake(x), x + torch.sin(a * x) ** 2 / a)


def test_fold_weight_norm_keeps_outputs_and_removes_parametrizations():
    torch.manual_seed(0)
    net = torch.nn.Sequential(WNConv1d(2, 4, 3, padding=1), Snake1d(4), WNConvTranspose1d(4, 2, 4, stride=2, padding=1))
    for m in net:
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            init_weight_normed_(m, std=0.3)
    x = torch.randn(1, 2, 16)
    before = net(x)
    fold_weight_norm(net)
    assert not any(parametrize.is_parametrized(m) for m in net.modules())
    torch.testing.assert_close(net(x), before)


def test_init_sets_effective_weight_of_weight_normed_conv():
    torch.manual_seed(0)
    conv = WNConv1d(64, 64, 7)
    init_weight_normed_(conv, std=0.02)
    assert abs(conv.weight.std().item() - 0.02) < 0.003
    assert torch.count_nonzero(conv.bias) == 0
