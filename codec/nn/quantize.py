"""Residual vector quantization with factorized, L2-normalised codebooks (DAC / X-Codec style)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.nn.distributed import all_reduce_sum_, broadcast_
from codec.nn.layers import WNConv1d


@dataclass
class QuantizedResult:
    """Output of :class:`ResidualVectorQuantize`.

    Attributes:
        z_q: [B, D, T] quantized latent (straight-through gradient to the input).
        codes: [B, K, T] int64 code indices, K = layers used.
        latents: [B, K*codebook_dim, T] projected (pre-quantization) latents of each layer.
        commitment_loss: scalar, pulls the encoder towards its codes.
        codebook_loss: scalar, pulls the codes towards the encoder.
    """

    z_q: Tensor
    codes: Tensor
    latents: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor


class VectorQuantize(nn.Module):
    """One factorized VQ layer: project D -> codebook_dim, nearest L2-normalised code, project back.

    Two optional defences against codebook collapse run in training mode only (see
    ``audiocraft.quantization.core_vq``: data init and ``expire_codes_``):

    * ``init_from_data``: at the first training forward codes are set to distinct projected latents of that
      batch (as many as it has frames), so codes start where the data is, not on unrelated N(0, 1) directions.
    * ``dead_code_steps``: a code no rank has used for that many consecutive training steps is moved onto a
      projected latent of the current batch (at most one code per frame per step, longest-unused first).

    Both are DDP-safe: code counts are summed over ranks (one all-reduce per layer and training step, so every
    rank takes the same decisions) and new code vectors are drawn on rank 0 and broadcast. They work
    unchanged without ``torch.distributed``. Their state lives in buffers that exist only when enabled, so
    a model without them keeps the original state-dict keys.

    Args:
        input_dim: channels D of the input.
        codebook_size: number of codes.
        codebook_dim: dimension of the low-dimensional lookup space.
        init_from_data: initialise the codebook from the first training batch.
        dead_code_steps: restart codes unused for this many training steps (0 = never).
    """

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int, init_from_data: bool = False,
                 dead_code_steps: int = 0):
        super().__init__()
        if dead_code_steps < 0:
            raise ValueError(f"dead_code_steps must be >= 0, got {dead_code_steps}")
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.dead_code_steps = dead_code_steps
        self.in_proj = WNConv1d(input_dim, codebook_dim, kernel_size=1)
        self.out_proj = WNConv1d(codebook_dim, input_dim, kernel_size=1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        if init_from_data:
            self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        else:
            self.initialized = None
        if dead_code_steps:
            self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long))
        else:
            self.unused_steps = None

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Quantize one residual.

        Args:
            z: [B, D, T].

        Returns:
            z_q [B, D, T] (straight-through), commitment [B], codebook [B] losses (per item),
            codes [B, T] int64, z_e [B, codebook_dim, T].
        """
        z_e = self.in_proj(z)
        if self.training:
            self._maintain_codebook(z_e.detach())
        codes = self.nearest(z_e)
        if self.training and self.unused_steps is not None:
            self._count_usage(codes)
        q = self.embed(codes)
        commitment = F.mse_loss(z_e, q.detach(), reduction="none").mean(dim=(1, 2))
        codebook = F.mse_loss(q, z_e.detach(), reduction="none").mean(dim=(1, 2))
        q = z_e + (q - z_e).detach()
        return self.out_proj(q), commitment, codebook, codes, z_e

    @torch.no_grad()
    def _maintain_codebook(self, z_e: Tensor) -> None:
        """Data init on the first training step, then restarts of dead codes (same decisions on every rank)."""
        if self.initialized is not None and not bool(self.initialized):
            self._replace(torch.arange(self.codebook_size, device=z_e.device), z_e)
            self.initialized.fill_(True)
        if self.unused_steps is not None:
            dead = (self.unused_steps >= self.dead_code_steps).nonzero().squeeze(1)
            if dead.numel():
                # Longest unused first (a stable sort: the same order on every rank).
                order = torch.sort(self.unused_steps[dead], descending=True, stable=True).indices
                replaced = self._replace(dead[order], z_e)
                self.unused_steps[replaced] = 0

    def _replace(self, which: Tensor, z_e: Tensor) -> Tensor:
        """Move the codes ``which`` (indices, in priority order) onto distinct latents of rank 0's batch.

        At most as many codes as rank 0 has frames move per call, so a small batch never fills the codebook
        with copies of a few frames; the rest stay as they are (still dead, they move at the next steps).

        Returns:
            The indices of the codes that moved.
        """
        flat = z_e.transpose(1, 2).reshape(-1, self.codebook_dim).float()
        n = broadcast_(torch.tensor([min(which.numel(), flat.shape[0])], device=flat.device))
        which = which[: int(n)]
        picks = flat[torch.randperm(flat.shape[0], device=flat.device)[: which.numel()]]
        broadcast_(picks)
        self.codebook.weight[which] = picks.to(self.codebook.weight.dtype)
        return which

    @torch.no_grad()
    def _count_usage(self, codes: Tensor) -> None:
        counts = all_reduce_sum_(torch.bincount(codes.reshape(-1), minlength=self.codebook_size))
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)

    @torch.no_grad()
    def nearest(self, z_e: Tensor) -> Tensor:
        """Indices of the closest codes by cosine similarity. z_e [B, d, T] -> [B, T] int64."""
        b, _, t = z_e.shape
        flat = F.normalize(z_e.transpose(1, 2).reshape(b * t, -1), dim=-1)
        book = F.normalize(self.codebook.weight, dim=-1)
        return (flat @ book.t()).argmax(dim=-1).view(b, t)

    def embed(self, codes: Tensor) -> Tensor:
        """Code vectors. codes [B, T] -> [B, codebook_dim, T]."""
        return self.codebook(codes).transpose(1, 2)

    def decode_codes(self, codes: Tensor) -> Tensor:
        """codes [B, T] -> projected quantized latent [B, D, T]."""
        return self.out_proj(self.embed(codes))


class ResidualVectorQuantize(nn.Module):
    """Residual VQ: each layer quantizes what the previous layers left over.

    In training mode a random ``quantizer_dropout`` fraction of the batch items keeps only the first
    ``n ~ U{1..n_codebooks}`` layers, so any prefix of the codes decodes. Always runs in fp32.

    Args:
        input_dim: channels D of the latent.
        n_codebooks: number of layers K.
        codebook_size: codes per layer.
        codebook_dim: factorized lookup dimension.
        quantizer_dropout: probability that a batch item uses a random prefix (training only).
        init_from_data: initialise each codebook from the first training batch (see :class:`VectorQuantize`).
        dead_code_steps: restart codes unused for this many training steps (0 = never).
    """

    def __init__(self, input_dim: int = 2048, n_codebooks: int = 8, codebook_size: int = 1024,
                 codebook_dim: int = 8, quantizer_dropout: float = 0.5, init_from_data: bool = False,
                 dead_code_steps: int = 0):
        super().__init__()
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ValueError(f"quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        self.input_dim = input_dim
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.quantizer_dropout = quantizer_dropout
        self.quantizers = nn.ModuleList(
            VectorQuantize(input_dim, codebook_size, codebook_dim, init_from_data, dead_code_steps)
            for _ in range(n_codebooks)
        )

    def forward(self, z: Tensor, n_quantizers: int | None = None) -> QuantizedResult:
        """Quantize ``z``.

        Args:
            z: [B, D, T].
            n_quantizers: use only the first n layers (all when None). Codes then have K = n.

        Returns:
            QuantizedResult; z_q is fp32.
        """
        k = self._check_n(n_quantizers)
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            b = z.shape[0]
            # Layers in use per batch item; every layer still runs so all parameters stay in the graph (DDP).
            n_used = torch.full((b,), k, device=z.device)
            if self.training and self.quantizer_dropout > 0 and n_quantizers is None:
                drop = torch.rand(b, device=z.device) < self.quantizer_dropout
                random_n = torch.randint(1, self.n_codebooks + 1, (b,), device=z.device)
                n_used = torch.where(drop, random_n, n_used)
            residual = z
            z_q = torch.zeros_like(z)
            commitment = z.new_zeros(())
            codebook = z.new_zeros(())
            codes, latents = [], []
            for i, vq in enumerate(self.quantizers[:k]):
                zq_i, com_i, cb_i, codes_i, z_e_i = vq(residual)
                mask = (n_used > i).to(z.dtype)
                z_q = z_q + zq_i * mask[:, None, None]
                residual = residual - zq_i
                commitment = commitment + (com_i * mask).mean()
                codebook = codebook + (cb_i * mask).mean()
                codes.append(codes_i)
                latents.append(z_e_i)
        return QuantizedResult(z_q=z_q, codes=torch.stack(codes, dim=1), latents=torch.cat(latents, dim=1),
                               commitment_loss=commitment, codebook_loss=codebook)

    def from_codes(self, codes: Tensor) -> Tensor:
        """Decode codes of the first K layers.

        Args:
            codes: [B, K, T] int64 with 1 <= K <= n_codebooks.

        Returns:
            z_q: [B, D, T] fp32.
        """
        k = self._check_n(codes.shape[1])
        with torch.autocast(device_type=codes.device.type, enabled=False):
            z_q = 0.0
            for i in range(k):
                z_q = z_q + self.quantizers[i].decode_codes(codes[:, i].long())
        return z_q

    def _check_n(self, n: int | None) -> int:
        if n is None:
            return self.n_codebooks
        if not 1 <= n <= self.n_codebooks:
            raise ValueError(f"number of quantizers must be in [1, {self.n_codebooks}], got {n}")
        return int(n)
