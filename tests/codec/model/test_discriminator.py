import pytest
import torch

from codec.model.discriminator import Discriminator

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_structure_and_gradients():
    torch.manual_seed(0)
    disc = Discriminator(24000, period_channels=4, stft_channels=4)
    x = torch.randn(2, 1, 4800, requires_grad=True)
    out = disc(x)
    assert len(out) == 5 + 3  # periods (2,3,5,7,11) + FFT sizes (2048,1024,512)
    for maps, period in zip(out[:5], (2, 3, 5, 7, 11), strict=False):
        assert len(maps) == 6
        assert maps[-1].shape[0] == 2 and maps[-1].shape[1] == 1 and maps[-1].shape[-1] == period
    for maps in out[5:]:
        assert len(maps) == 5 * 5 + 1  # 5 bands x 5 convs + post
        assert maps[-1].shape[:2] == (2, 1)
    sum(m[-1].mean() for m in out).backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in disc.parameters())


def test_items_are_independent():
    torch.manual_seed(0)
    disc = Discriminator(24000, periods=[2], fft_sizes=[512], period_channels=4, stft_channels=4)
    a, b = torch.randn(1, 1, 4800), torch.randn(1, 1, 4800)
    both = disc(torch.cat([a, b]))
    alone = disc(a)
    for m_both, m_alone in zip(both, alone, strict=True):
        torch.testing.assert_close(m_both[-1][:1], m_alone[-1], atol=1e-5, rtol=1e-4)
