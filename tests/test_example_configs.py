"""Every example config shipped in config/ loads: a copied example never starts with an error."""

from __future__ import annotations

import glob
import os

import pytest

from logpipe.config import loads

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "config")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIG_DIR, "*.toml"))), ids=os.path.basename)
def test_example_config_validates(path):
    with open(path, encoding="utf-8") as f:
        config = loads(f.read())
    assert config.sinks
