"""Fixtures every test module may use."""

import ctypes
import ctypes.util
import gc

import pytest


@pytest.fixture(autouse=True, scope="module")
def close_default_reward_pool():
    """After each module, stop the shared reward worker pool (the next use forks a new one). Its
    workers are forked from the pytest process as it was then, and keep that heap while the
    process moves on: left for the whole suite, two of them held ~1 GB by the real-model tests."""
    yield
    from lad.rewards import math as math_rewards

    if math_rewards._default is not None:
        math_rewards._default.close()


@pytest.fixture
def release_memory():
    """After the test, hand the heap it freed back to the system. A test that trains the real model
    in the pytest process leaves gigabytes freed but still mapped by the allocator, which the next
    test's child trainer then adds to: the suite's peak would be their sum."""
    yield
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        ctypes.CDLL(libc).malloc_trim(0)


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer): the 1M-parameter tiny model, freshly built for each test module."""
    from lad.modeling import build_tiny_model

    return build_tiny_model("1m", seed=0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny):
    """The tiny model saved as a Hugging Face folder, for stages that load their model by path."""
    model, tok = tiny
    path = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """A storage cache (the value for LAD_CACHE_DIR) in which the packaged SmolLM2-135M-Instruct
    GGUF is converted once for the whole session (about 40 s, 1.9 GB peak); tests that name
    ``smollm2-135m-instruct`` point LAD_CACHE_DIR here and find the conversion done."""
    from lad.gguf import convert_gguf
    from lad.modeling import packaged_gguf

    base = tmp_path_factory.mktemp("lad-cache")
    convert_gguf(packaged_gguf("smollm2-135m-instruct"), root=base / "gguf", origin="smollm2-135m-instruct")
    return base


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_cache):
    """The converted SmolLM2-135M-Instruct: an ordinary Hugging Face folder (float32, 540 MB)."""
    (entry,) = (smollm2_cache / "gguf").iterdir()
    return entry
