"""The frozen MuQ teacher: semantic features at 25 frames/s from 24 kHz audio.

The teacher is never trained and never re-initialised: it stays in ``eval()`` mode (``train()`` is a
no-op), its parameters have ``requires_grad=False``, and its forward runs in fp32 under ``no_grad`` with
autocast disabled. It is kept out of the generator (not a submodule of ``XCodec``) so optimizers built
from the generator's parameters never see it.
"""

from __future__ import annotations

import contextlib
import json
import random
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # muq pulls in transformers; import it only when a teacher is built.
    from muq import MuQ

DEFAULT_MODEL_ID = "OpenMuQ/MuQ-large-msd-iter"


class MuQTeacher(nn.Module):
    """Frozen MuQ feature extractor.

    Args:
        muq: a ``muq.MuQ`` model (published or randomly initialised).
        layer: which hidden state to return; ``-1`` is the last conformer layer, ``0`` the conformer input.
    """

    sample_rate: int = 24000
    frame_rate: int = 25
    hop_length: int = 960

    def __init__(self, muq: MuQ, layer: int = -1):
        super().__init__()
        self.muq = muq
        self.layer = layer
        self.dim = int(muq.config.encoder_dim)
        self.num_layers = int(muq.config.encoder_depth)
        if not -(self.num_layers + 1) <= layer <= self.num_layers:
            raise ValueError(f"teacher.layer={layer} out of range for a {self.num_layers}-layer MuQ")
        self.muq.requires_grad_(False)
        self.muq.float()
        super().train(False)

    def train(self, mode: bool = True) -> MuQTeacher:
        """No-op: the teacher is always in eval mode (batch norm statistics and dropout stay frozen)."""
        return super().train(False)

    @classmethod
    def from_pretrained(cls, model_id: str = DEFAULT_MODEL_ID, layer: int = -1) -> MuQTeacher:
        """Load a published MuQ from the Hugging Face Hub (or a local copy of one).

        Args:
            model_id: Hub id or local directory, e.g. ``"OpenMuQ/MuQ-large-msd-iter"``.
            layer: hidden state to return (``-1`` = last).
        """
        from muq import MuQ

        return cls(MuQ.from_pretrained(model_id), layer=layer)

    @classmethod
    def random(cls, dim: int = 32, depth: int = 2, heads: int = 2, conv_dim: int = 16, seed: int = 0,
               layer: int = -1, intermediate_size: int | None = None, conv_kernel: int = 31,
               mel_mean: float = -20.0, mel_std: float = 20.0) -> MuQTeacher:
        """A small randomly initialised MuQ built from the real ``muq`` classes (tests, smoke configs).

        The global torch and Python RNG states are left untouched; the same arguments give the same weights.

        Args:
            dim: conformer width (= feature dim).
            depth: number of conformer layers.
            heads: attention heads (must divide ``dim``).
            conv_dim: channels of the 2-D convolutional front end.
            seed: weight init seed.
            layer: hidden state to return.
            intermediate_size: conformer feed-forward width (default ``2 * dim``).
            conv_kernel: depthwise convolution kernel of the conformer blocks.
            mel_mean: log-mel normalisation mean (MuQ's ``melspec_2048_mean``).
            mel_std: log-mel normalisation std (MuQ's ``melspec_2048_std``).
        """
        muq = build_random_muq(dim=dim, depth=depth, heads=heads, conv_dim=conv_dim, seed=seed,
                               intermediate_size=intermediate_size, conv_kernel=conv_kernel,
                               mel_mean=mel_mean, mel_std=mel_std)
        return cls(muq, layer=layer)

    def forward(self, audio: Tensor) -> Tensor:
        """Extract features.

        Args:
            audio (Tensor): [B, N] or [B, 1, N] at 24 kHz, N a multiple of 960.

        Returns:
            Tensor: [B, N / 960, dim] fp32 features of the selected layer.
        """
        if audio.dim() == 3:
            if audio.shape[1] != 1:
                raise ValueError(f"teacher expects mono audio [B, 1, N], got {tuple(audio.shape)}")
            audio = audio[:, 0]
        if audio.dim() != 2:
            raise ValueError(f"teacher expects [B, N] or [B, 1, N] audio, got {tuple(audio.shape)}")
        if audio.shape[-1] % self.hop_length:
            raise ValueError(f"audio length {audio.shape[-1]} is not a multiple of {self.hop_length}")
        autocast = torch.autocast(audio.device.type, enabled=False) if audio.device.type in ("cpu", "cuda") \
            else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            out = self.muq(audio.float(), output_hidden_states=True)
        return out.hidden_states[self.layer].float()


def build_random_muq(dim: int, depth: int, heads: int, conv_dim: int, seed: int,
                     intermediate_size: int | None = None, conv_kernel: int = 31,
                     mel_mean: float = -20.0, mel_std: float = 20.0) -> MuQ:
    """Build a randomly initialised ``muq.MuQ`` of the given geometry without touching global RNG state."""
    from muq import MuQ
    from muq.muq.muq import MuQConfig
    from transformers import Wav2Vec2ConformerConfig

    if dim % heads:
        raise ValueError(f"teacher dim {dim} is not divisible by heads {heads}")
    # to_dict() keeps nested objects that EasyDict cannot wrap; a JSON round trip gives plain values.
    w2v2 = json.loads(Wav2Vec2ConformerConfig(
        hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads,
        intermediate_size=intermediate_size or 2 * dim, conv_depthwise_kernel_size=conv_kernel,
    ).to_json_string(use_diff=False))
    config = MuQConfig(encoder_dim=dim, encoder_depth=depth, conv_dim=conv_dim, n_mels=128,
                       stat={"melspec_2048_mean": mel_mean, "melspec_2048_std": mel_std}, w2v2_config=w2v2)
    py_state = random.getstate()  # MuQModel calls random.seed(); restore the caller's state afterwards
    try:
        with torch.random.fork_rng(devices=[]):
            muq = MuQ(config)
            # MuQ's random-projection quantizer re-seeds torch with a fixed seed while it is built, so
            # draw the learnable layers again from our seed (part of construction, never done later).
            torch.manual_seed(seed)
            for module in muq.modules():
                if hasattr(module, "reset_parameters") and not hasattr(module, "parametrizations"):
                    module.reset_parameters()
            return muq
    finally:
        random.setstate(py_state)


def teacher_state_dict(teacher: MuQTeacher) -> dict[str, Any]:
    """The teacher's tensors, contiguous and unshared (for safetensors)."""
    return {k: v.detach().contiguous().clone() for k, v in teacher.muq.state_dict().items()}
