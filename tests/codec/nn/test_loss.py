import pytest
import torch
import torchaudio

from codec.nn.loss import (
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    discriminator_loss,
    generator_loss,
    split_real_fake,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_mel_loss_is_built_for_the_given_rate_not_16k():
    """The published model computed its mel loss at 16 kHz on 24 kHz audio."""
    loss = MultiScaleMelLoss(24000)
    assert loss.sample_rate == 24000
    assert len(loss.transforms) == 7
    assert [t.n_fft for t in loss.transforms] == [32, 64, 128, 256, 512, 1024, 2048]
    for t, n_mels in zip(loss.transforms, (5, 10, 20, 40, 80, 160, 320), strict=True):
        assert t.sample_rate == 24000
        fb = t.mel_scale.fb
        n_freqs = t.n_fft // 2 + 1
        kw = dict(n_freqs=n_freqs, f_min=0.0, n_mels=n_mels, norm="slaney", mel_scale="slaney")
        fb24 = torchaudio.functional.melscale_fbanks(f_max=12000.0, sample_rate=24000, **kw)
        fb16 = torchaudio.functional.melscale_fbanks(f_max=8000.0, sample_rate=16000, **kw)
        torch.testing.assert_close(fb, fb24)
        assert not torch.allclose(fb, fb16)


def test_mel_and_stft_losses_are_zero_for_identical_and_grow_with_noise():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4800) * 0.1
    small, big = x + 0.001 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)
    for loss in (MultiScaleMelLoss(24000), MultiResolutionSTFTLoss()):
        assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
        assert 0 < loss(small, x).item() < loss(big, x).item()


def test_lsgan_losses():
    real = [[torch.full((2, 3), 5.0), torch.ones(2, 1)]]
    fake = [[torch.full((2, 3), 4.0), torch.zeros(2, 1)]]
    assert discriminator_loss(real, fake).item() == pytest.approx(0.0)  # perfect discriminator
    adv, fm = generator_loss(real, fake)
    assert adv.item() == pytest.approx(1.0) and fm.item() == pytest.approx(1.0)
    both = [[torch.cat([r, f]) for r, f in zip(real[0], fake[0], strict=True)]]
    r, f = split_real_fake(both, 2)
    torch.testing.assert_close(r[0][0], real[0][0])
    torch.testing.assert_close(f[0][1], fake[0][1])
