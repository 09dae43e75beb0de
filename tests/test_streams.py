"""The random streams (affssl.streams): keys that never move, one stream per purpose."""

from __future__ import annotations

import hashlib

import pytest
import torch

from affssl import streams

CPU = torch.device("cpu")


@pytest.mark.parametrize("purpose", ["order", "views", "affine"])
def test_the_original_streams_keep_their_seeds(purpose):
    """The key derivation of the engine's first three streams, written out: their draws never move."""
    key = hashlib.sha256(f"3/{purpose}/2/1".encode()).digest()
    assert streams.generator(3, purpose, 2, CPU, 1).initial_seed() == int.from_bytes(key[:8], "little") >> 1


def test_every_purpose_is_its_own_stream_and_a_typo_is_refused():
    seeds = {streams.generator(0, p, 0, CPU).initial_seed() for p in streams.PURPOSES}
    assert len(seeds) == len(streams.PURPOSES)
    assert set(streams.OBJECTIVE_STREAMS) <= set(streams.PURPOSES)
    assert set(streams.objective_generators(0, 0, CPU)) == set(streams.OBJECTIVE_STREAMS)
    with pytest.raises(ValueError, match="unknown random stream 'view'"):
        streams.generator(0, "view", 0, CPU)
