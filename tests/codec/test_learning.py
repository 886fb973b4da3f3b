"""The codec actually learns: a tiny XCodec trained with GANTrainStep on one music-like clip."""

import pytest
import torch
from utils import music_clip

from codec.model.discriminator import Discriminator
from codec.model.xcodec import XCodec
from codec.nn.loss import MultiScaleMelLoss
from codec.train_step import GANTrainStep

SEM_DIM = 16


@pytest.mark.slow
def test_tiny_codec_learns_a_music_clip():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 spinning OpenMP threads on the shared 2-core machine are far slower
    try:
        torch.manual_seed(0)
        clip = torch.from_numpy(music_clip(0.8, seed=0)).T[None]  # chords + bass + drums, [1, 1, N]
        audio = clip[..., : clip.shape[-1] // 960 * 960]
        semantic = torch.randn(1, audio.shape[-1] // 960, SEM_DIM)  # fixed stand-in teacher features
        gen = XCodec(encoder_dim=4, decoder_dim=32, semantic_dim=SEM_DIM)  # default quantizer dropout 0.5
        disc = Discriminator(24000, periods=[2, 3], fft_sizes=[1024, 256], period_channels=4, stft_channels=4)
        step = GANTrainStep(gen, disc, sample_rate=24000, lr=2e-3)  # a higher lr than 1e-4: few steps
        mel = MultiScaleMelLoss(24000)

        def distances():
            gen.eval()
            with torch.no_grad():
                codes = gen.encode(audio, semantic)
                return {k: mel(gen.decode(codes[:, :k]), audio).item() for k in (1, 8)}

        untrained = distances()
        for _ in range(STEPS):
            losses = step(audio, semantic)
        trained = distances()
    finally:
        torch.set_num_threads(threads)
    assert all(v == v for v in losses.values())
    assert trained[8] <= 0.7 * untrained[8], (untrained, trained)
    assert trained[8] < trained[1], trained


STEPS = 125
