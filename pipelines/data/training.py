"""The dataset a training run reads: the feature cache when it was written for the config, else the live
pipeline (decode, crop, MuQ). Above both, so neither imports the other."""

from __future__ import annotations

import logging

from pipelines.data.config import DataConfig
from pipelines.data.dataset import add_semantic, build_segment_dataset
from pipelines.data.feature_cache import cache_matches, read_feature_cache

logger = logging.getLogger(__name__)


def build_training_dataset(cfg: DataConfig, split: str = "train", epoch: int = 0):
    """Dataset for Ray Train: ``iter_torch_batches`` yields ``audio [B, 1, L]`` and ``semantic [B, L/960, D]``.

    Uses the feature cache (``cfg.cache_dir``) when it was written for this config; otherwise decodes
    and runs MuQ on the fly (``semantic`` is omitted when ``cfg.semantic.enabled`` is false).

    Args:
        cfg: data config.
        split: ``"train"`` or ``"val"`` (held out by key hash, ``cfg.val_fraction`` of the tracks).
        epoch: changes the random segment offsets (ignored when reading the cache).
    """
    if cfg.cache_dir and cache_matches(cfg):
        return read_feature_cache(cfg, split)
    if cfg.cache_dir:
        logger.warning("feature cache %s missing or built for another config; computing MuQ features", cfg.cache_dir)
    ds = build_segment_dataset(cfg, split, epoch)
    if not cfg.semantic.enabled:
        return ds.select_columns(["audio"], num_cpus=cfg.cpu.read_num_cpus)
    return add_semantic(ds, cfg).select_columns(["audio", "semantic"], num_cpus=cfg.cpu.read_num_cpus)
