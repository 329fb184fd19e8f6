"""Shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.keys import Keyring
from pipeline.profile import CompiledProfile, compile_profile, load_profile

KEY = bytes(range(32))


@pytest.fixture
def keyring() -> Keyring:
    """A fixed key, so pseudonyms are reproducible across tests."""
    return Keyring(KEY)


def compiled(name: str = "dicom-basic", *options: str) -> CompiledProfile:
    """Compile a built-in profile with options."""
    return compile_profile(load_profile(name, options=list(options)))
