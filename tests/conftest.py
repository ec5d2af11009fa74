"""Fixtures every test module may use."""

import pytest


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer): the 1M-parameter tiny model, freshly built for each test module."""
    from lad.modeling import build_tiny_model

    return build_tiny_model("1m", seed=0)
