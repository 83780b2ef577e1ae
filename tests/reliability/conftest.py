"""Fixtures shared by the reliability suite (on top of tests/conftest.py's session Ray, moto and corpora)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.config import load_config
from pipelines.stores import read_store
from tests.helpers import TINY_LUSS_OVERRIDES
from vad_models.luss_ae.config import LussAeConfig
from vad_models.luss_ae.method import LussAeMethod


@pytest.fixture(scope="session")
def luss_two_epochs() -> LussAeConfig:
    """The tiny LUSS-AE config of the session checkpoint, trained for two epochs (faults hit the second one)."""
    overrides = [o for o in TINY_LUSS_OVERRIDES if not o.startswith("epochs=")]
    return load_config(LussAeConfig, None, (*overrides, "epochs=2"))


@pytest.fixture(scope="session")
def steps_per_epoch(luss_store: str, luss_two_epochs: LussAeConfig) -> int:
    """Optimizer steps in one epoch over the whole train split (one worker, ``val_fraction=0``).

    Counted from the examples the method makes of the store's rows, so global step numbers that fall in the second
    epoch can be named without hard-coding the corpus size.
    """
    method, rng = LussAeMethod(), np.random.default_rng(0)
    examples = sum(
        len(method.make_examples(batch, luss_two_epochs, rng)["clip"])
        for batch in read_store(luss_store, split="train").iter_batches(batch_size=4, batch_format="numpy")
    )
    return math.ceil(examples / luss_two_epochs.batch_size)
