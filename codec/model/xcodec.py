"""X-Codec generator: acoustic encoder + semantic (teacher) features fused before a shared RVQ."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from codec.config import INITS, LATENT_NORMS
from codec.model.decoder import Decoder
from codec.model.encoder import Encoder
from codec.nn.layers import init_weight_normed_
from codec.nn.quantize import ResidualVectorQuantize


@dataclass
class CodecOutput:
    """Output of :meth:`XCodec.forward`.

    Attributes:
        audio: [B, 1, N] reconstruction.
        codes: [B, K, T] int64.
        semantic_pred: [B, T, semantic_dim] fc_post_s output (regressed onto the teacher features).
        commitment_loss: scalar.
        codebook_loss: scalar.
    """

    audio: Tensor
    codes: Tensor
    semantic_pred: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor


class XCodec(nn.Module):
    """Semantic music codec generator (the frozen teacher is NOT a submodule).

    concat(encoder latent [B,T,latent], teacher features [B,T,Ds]) -> fc_prior -> RVQ -> fc_post_s (-> Ds,
    semantic prediction) and fc_post_a (-> latent) -> decoder -> audio.

    The options after ``quantizer_dropout`` keep the RVQ input from collapsing onto one direction (all off
    reproduces the original muq-xcodec architecture, which imported checkpoints need):
    ``semantic_norm`` standardises each teacher channel with running statistics (``BatchNorm1d`` without
    affine) before fusion, ``latent_norm`` normalises the fused latent before the RVQ (``"batch"``: each
    channel standardised over frames with running statistics, which removes the component all frames share;
    ``"layer"``: each frame standardised over channels), and the quantizer gets data init and dead-code
    restarts.

    Args:
        sample_rate: audio rate in Hz.
        encoder_dim: channels of the encoder's first conv.
        encoder_rates: encoder strides; hop = prod(encoder_rates).
        latent_dim: acoustic latent channels (default ``encoder_dim * 2**len(encoder_rates)``).
        semantic_dim: teacher feature dimension Ds.
        decoder_dim: channels of the decoder's first conv.
        decoder_rates: decoder upsampling factors (product must equal the hop).
        n_codebooks: RVQ layers.
        codebook_size: codes per layer.
        codebook_dim: factorized lookup dimension.
        quantizer_dropout: fraction of training items that use a random prefix of the RVQ.
        init: ``"zero_bias"`` keeps PyTorch's initial weights of the convolutions and zeroes their biases;
            ``"default"`` keeps PyTorch's weights and biases; ``"trunc_normal"`` draws the weights from a
            truncated normal with std 0.02 and zeroes the biases (the original recipe's call). PyTorch's
            random biases give the waveform a constant offset (e.g. 0.5 for the tiny preset's seed 0) that no
            loss sees: the mel loss and the discriminators both ignore DC.
        semantic_norm: standardise the teacher features per channel before fusion.
        latent_norm: ``"none"``, ``"batch"`` (BatchNorm1d without affine) or ``"layer"`` (LayerNorm without
            affine) on the fused latent before the RVQ.
        codebook_init_from_data: initialise each codebook from the first training batch's latents.
        dead_code_steps: restart codes unused for this many training steps (0 = never).
        dc_block_seconds: when > 0, the decoder removes the moving average over this window from its output
            before the tanh (``Decoder(dc_block=...)``): no loss sees DC, and without the block the tiny preset's
            output drifts to an offset of ~0.1 on real music, most of its energy.
    """

    def __init__(self, sample_rate: int = 24000, encoder_dim: int = 64, encoder_rates: list[int] = (2, 4, 10, 12),
                 latent_dim: int | None = None, semantic_dim: int = 1024, decoder_dim: int = 1536,
                 decoder_rates: list[int] = (12, 10, 4, 2), n_codebooks: int = 8, codebook_size: int = 1024,
                 codebook_dim: int = 8, quantizer_dropout: float = 0.5, init: str = "trunc_normal",
                 semantic_norm: bool = False, latent_norm: str = "none", codebook_init_from_data: bool = False,
                 dead_code_steps: int = 0, dc_block_seconds: float = 0.0):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if latent_norm not in LATENT_NORMS:
            raise ValueError(f"latent_norm must be one of {LATENT_NORMS}, got {latent_norm!r}")
        if math.prod(encoder_rates) != math.prod(decoder_rates):
            raise ValueError(f"encoder_rates {list(encoder_rates)} and decoder_rates {list(decoder_rates)} "
                             "must have the same product (the hop length)")
        self.sample_rate = sample_rate
        self.hop_length = math.prod(encoder_rates)
        self.frame_rate = sample_rate / self.hop_length
        self.latent_dim = latent_dim or encoder_dim * 2 ** len(encoder_rates)
        self.semantic_dim = semantic_dim
        self.fusion_dim = self.latent_dim + semantic_dim
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.init = init

        self.encoder = Encoder(encoder_dim, list(encoder_rates), self.latent_dim)
        self.semantic_norm = nn.BatchNorm1d(semantic_dim, affine=False) if semantic_norm else None
        self.fc_prior = nn.Linear(self.fusion_dim, self.fusion_dim)
        self.latent_norm = {"none": None, "layer": nn.LayerNorm(self.fusion_dim, elementwise_affine=False),
                            "batch": nn.BatchNorm1d(self.fusion_dim, affine=False)}[latent_norm]
        self.quantizer = ResidualVectorQuantize(self.fusion_dim, n_codebooks, codebook_size, codebook_dim,
                                                quantizer_dropout, codebook_init_from_data, dead_code_steps)
        self.fc_post_s = nn.Linear(self.fusion_dim, semantic_dim)
        self.fc_post_a = nn.Linear(self.fusion_dim, self.latent_dim)
        self.decoder = Decoder(self.latent_dim, decoder_dim, list(decoder_rates),
                               dc_block=round(dc_block_seconds * sample_rate))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise this model's own convolutions as ``init`` says (never touches any teacher)."""
        if self.init == "default":
            return
        for m in self.modules():
            if not isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
                continue
            if self.init == "trunc_normal":
                init_weight_normed_(m)  # weights and a zero bias
            elif m.bias is not None:  # zero_bias
                nn.init.zeros_(m.bias)

    def _fuse(self, audio: Tensor, semantic: Tensor) -> Tensor:
        """Fused pre-quantization latent [B, fusion_dim, T]."""
        if audio.dim() != 3 or audio.shape[1] != 1 or audio.shape[-1] % self.hop_length:
            raise ValueError(f"audio must be [B, 1, N] with N % {self.hop_length} == 0, got {list(audio.shape)}")
        z_a = self.encoder(audio).transpose(1, 2)  # [B, T, latent]
        if semantic.shape[:2] != z_a.shape[:2] or semantic.shape[-1] != self.semantic_dim:
            raise ValueError(f"semantic must be [B, {z_a.shape[1]}, {self.semantic_dim}] for audio "
                             f"{list(audio.shape)}, got {list(semantic.shape)}")
        semantic = semantic.to(z_a.dtype)
        if self.semantic_norm is not None:
            semantic = self.semantic_norm(semantic.transpose(1, 2)).transpose(1, 2)
        z = self.fc_prior(torch.cat([z_a, semantic], dim=-1))
        if isinstance(self.latent_norm, nn.LayerNorm):
            z = self.latent_norm(z)
        z = z.transpose(1, 2)
        return self.latent_norm(z) if isinstance(self.latent_norm, nn.BatchNorm1d) else z

    def forward(self, audio: Tensor, semantic: Tensor, n_quantizers: int | None = None) -> CodecOutput:
        """Encode, quantize and decode.

        Args:
            audio: [B, 1, N] with N % hop_length == 0.
            semantic: [B, N / hop_length, semantic_dim] teacher features.
            n_quantizers: RVQ layers to use (all when None; random prefixes in training).

        Returns:
            CodecOutput.
        """
        q = self.quantizer(self._fuse(audio, semantic), n_quantizers)
        z_q = q.z_q.transpose(1, 2)  # [B, T, fusion]
        semantic_pred = self.fc_post_s(z_q)
        audio_hat = self.decoder(self.fc_post_a(z_q).transpose(1, 2))
        return CodecOutput(audio=audio_hat, codes=q.codes, semantic_pred=semantic_pred,
                           commitment_loss=q.commitment_loss, codebook_loss=q.codebook_loss)

    def encode(self, audio: Tensor, semantic: Tensor, n_quantizers: int | None = None) -> Tensor:
        """Audio [B, 1, N] and teacher features [B, T, Ds] -> codes [B, K, T] int64 (eval mode: no quantizer
        dropout, running feature statistics, no codebook maintenance)."""
        was_training = self.training
        self.eval()
        try:
            return self.quantizer(self._fuse(audio, semantic), n_quantizers).codes
        finally:
            self.train(was_training)

    def decode(self, codes: Tensor) -> Tensor:
        """Codes [B, K, T] (any prefix K of the RVQ) -> audio [B, 1, T * hop_length]."""
        z_q = self.quantizer.from_codes(codes).transpose(1, 2)
        return self.decoder(self.fc_post_a(z_q).transpose(1, 2))
