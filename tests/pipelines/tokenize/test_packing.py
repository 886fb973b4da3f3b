"""Packing token sequences into LM windows: exact windows on hand-computed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.tokenize.packing import PackingConfig, sequence, windows

CODES = np.array([[1, 2, 3], [4, 5, 6]], np.int16)  # n_q=2, T=3


def test_flatten_offsets_layers_and_pads_the_last_window():
    cfg = PackingConfig(window=3, layout="flatten", codebook_size=10)
    assert cfg.specials(2) == (20, 21, 22) and cfg.vocab_size(2) == 23
    np.testing.assert_array_equal(sequence(CODES, cfg), [20, 1, 14, 2, 15, 3, 16, 21])
    got = windows(CODES, cfg)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[20, 1, 14], [2, 15, 3], [16, 21, 22]])
    np.testing.assert_array_equal(windows(CODES, PackingConfig(window=3, codebook_size=10, drop_last=True)),
                                  [[20, 1, 14], [2, 15, 3]])
    np.testing.assert_array_equal(windows(CODES, PackingConfig(window=4, codebook_size=10, n_q=1)),
                                  [[10, 1, 2, 3], [11, 12, 12, 12]])  # first layer only: specials follow its 10 ids


def test_parallel_keeps_one_stream_per_layer():
    cfg = PackingConfig(window=2, layout="parallel", codebook_size=10, bos=100, eos=101, pad=102)
    assert cfg.vocab_size(2) == 103
    np.testing.assert_array_equal(windows(CODES, cfg), [[[100, 1], [100, 4]], [[2, 3], [5, 6]],
                                                        [[101, 102], [101, 102]]])
    np.testing.assert_array_equal(windows(CODES, PackingConfig(window=5, layout="parallel", codebook_size=10)),
                                  [[[10, 1, 2, 3, 11], [10, 4, 5, 6, 11]]])


def test_bad_codes_and_config_are_refused():
    with pytest.raises(ValueError, match="outside"):
        sequence(CODES, PackingConfig(codebook_size=6))
    with pytest.raises(ValueError, match="fewer than n_q=3"):
        sequence(CODES, PackingConfig(n_q=3))
    with pytest.raises(ValueError, match="layout"):
        PackingConfig(layout="delay")
