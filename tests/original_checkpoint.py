"""Original muq-xcodec Lightning checkpoints built in tests (original key names and shapes, random values).

Shared by the import tests (``tests/codec/test_convert.py``) and the fine-tuning / tokenization tests that
start from an imported release.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from codec.builders import build_discriminator, build_generator
from codec.config import load_codec_config
from codec.model.teacher import build_random_muq

DAC_DISCRIMINATOR_CHANNELS = 32  # the original's Discriminator() (DAC defaults)

TINY = dict(encoder_dim=4, decoder_dim=32)  # latent 64 = MuQ dim, as the original's fc shapes require


def muq_config(dim: int, heads: int = 2) -> dict:
    """A one-layer MuQ architecture (as MuQ's config.json would hold it)."""
    muq = build_random_muq(dim=dim, depth=1, heads=heads, conv_dim=8, seed=0, mel_mean=6.77, mel_std=18.4)
    return json.loads(json.dumps(dataclasses.asdict(muq.config)))


def old_wn(key: str) -> str:
    return key.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v")


def rand_like(key: str, t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    if not t.is_floating_point():
        return t.clone()
    if key.endswith("alpha"):
        return torch.rand(t.shape, generator=g) + 0.5
    if key.endswith("original0") or key.endswith("weight_g"):
        return torch.rand(t.shape, generator=g) * 0.5 + 0.5
    if key.endswith("bias"):
        return torch.randn(t.shape, generator=g) * 0.01
    if key.endswith("running_var"):
        return torch.rand(t.shape, generator=g) + 0.5
    scale = 1.0 / math.sqrt(t[0].numel()) if t.dim() > 1 else 0.1
    return torch.randn(t.shape, generator=g) * scale


def original_state(encoder_dim: int, decoder_dim: int, muq: dict, disc_channels: int = 4, seed: int = 0,
                   **model) -> dict:
    """A state dict in the original layout with random values (shapes from our modules of the same math).

    ``model`` overrides the rest of the geometry (``encoder_rates``, ``n_codebooks``, ...; default: muq_xcodec).
    """
    from codec.convert import ORIGINAL_ARCHITECTURE

    latent = model.get("latent_dim") or encoder_dim * 2 ** len(model.get("encoder_rates", [2, 4, 10, 12]))
    cfg = load_codec_config("muq_xcodec", {"model": {"encoder_dim": encoder_dim, "decoder_dim": decoder_dim,
                                                     **ORIGINAL_ARCHITECTURE, **model},
                                           "teacher": {"source": "random", "model_id": "", "dim": latent},
                                           "discriminator": {"period_channels": disc_channels,
                                                             "stft_channels": disc_channels}})
    g = torch.Generator().manual_seed(seed)
    names = {"fc_post_s": "fc_post1", "fc_post_a": "fc_post2"}
    state = {}
    for key, t in build_generator(cfg).state_dict().items():
        root, _, rest = key.partition(".")
        state[old_wn(f"{names.get(root, root)}.{rest}")] = rand_like(key, t, g)
    for alias, root in (("generator.0.", "encoder."), ("generator.1.", "quantizer."), ("generator.2.", "decoder.")):
        state.update({alias + k[len(root):]: v for k, v in list(state.items()) if k.startswith(root)})
    from codec.builders import build_muq

    for key, t in build_muq(muq).state_dict().items():
        state["semantic." + old_wn(key)] = rand_like(key, t, g)
    for key, t in build_discriminator(cfg).state_dict().items():
        parts = key.split(".")  # DAC wraps every conv but conv_post in Sequential(conv, LeakyReLU)
        if parts[2] == "convs":
            parts.insert(4, "0")
        elif parts[2] == "band_convs":
            parts.insert(5, "0")
        state["discriminator." + old_wn(".".join(parts))] = rand_like(key, t, g)
    return state


def lightning(state: dict, **extra) -> dict:
    first = next(iter(state.values()))
    return {"epoch": 7, "global_step": 1234, "pytorch-lightning_version": "2.1.2", "state_dict": state,
            "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros_like(first),
                                                "exp_avg_sq": torch.zeros_like(first)}},
                                  "param_groups": [{"lr": 1e-4, "betas": (0.8, 0.99), "params": [0]}]}],
            "lr_schedulers": [{"gamma": 0.999996, "base_lrs": [1e-4], "last_epoch": 1234}],
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"kth_value": torch.tensor(float("inf")),
                                                               "best_model_path": ""}},
            "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 7}}}}, **extra}


def write_original_checkpoint(directory: Path, seed: int = 0) -> tuple[Path, Path, dict, dict]:
    """A tiny original checkpoint (with discriminator) and its MuQ ``config.json``.

    Returns:
        (``last.ckpt``, ``muq.json``, the flat state dict, the MuQ config).
    """
    directory.mkdir(parents=True, exist_ok=True)
    cfg = muq_config(64)
    (directory / "muq.json").write_text(json.dumps(cfg))
    state = original_state(**TINY, muq=cfg, seed=seed)
    torch.save(lightning(state), directory / "last.ckpt")
    return directory / "last.ckpt", directory / "muq.json", state, cfg


def original_lightning_class(muq: dict, disc_channels: int = DAC_DISCRIMINATOR_CHANNELS) -> type:
    """A stand-in for the original ``model.codec.CODEC`` LightningModule, for ``load_from_checkpoint`` tests.

    Same ``__init__`` signature and defaults as the original, and modules with exactly the original's
    state-dict names and shapes for that geometry (zeros until a checkpoint is loaded): what Lightning's strict
    loading checks. The real class cannot be built here (its ``__init__`` downloads MuQ from the Hub, and its
    discriminator is always DAC's default one; ``disc_channels`` other than 32 only serves tiny test sources).
    ``init_args`` records what ``__init__`` received.
    """
    import lightning as L
    from torch import nn

    class CODEC(L.LightningModule):
        def __init__(self, encoder_dim: int = 64, encoder_rates: list = (2, 4, 10, 12), latent_dim: int | None = None,
                     decoder_dim: int = 1536, decoder_rates: list = (12, 10, 4, 2), n_codebooks: int = 8,
                     codebook_size: int = 1024, codebook_dim: int = 8, quantizer_dropout: bool = False,
                     sample_rate: int = 24000):
            super().__init__()
            self.init_args = dict(encoder_dim=encoder_dim, encoder_rates=list(encoder_rates), latent_dim=latent_dim,
                                  decoder_dim=decoder_dim, decoder_rates=list(decoder_rates), n_codebooks=n_codebooks,
                                  codebook_size=codebook_size, codebook_dim=codebook_dim,
                                  quantizer_dropout=quantizer_dropout, sample_rate=sample_rate)
            geometry = {k: v for k, v in self.init_args.items() if k not in ("encoder_dim", "decoder_dim",
                                                                             "quantizer_dropout")}
            state = original_state(encoder_dim, decoder_dim, muq, disc_channels, **geometry)
            for key, value in state.items():
                *path, leaf = key.split(".")
                module: nn.Module = self
                for name in path:
                    if name not in module._modules:
                        module.add_module(name, nn.Module())
                    module = module._modules[name]
                module.register_buffer(leaf, torch.zeros_like(value))

    return CODEC
