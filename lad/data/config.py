"""The data prep stage's configuration: one pydantic object, loadable from YAML."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lad.config import ConfigError, format_validation, load_yaml_config  # noqa: F401  (re-exported for callers)

from lad.data.adapters import ADAPTERS, FieldMap
from lad.data.readers import Format
from lad.data.synthetic import DIFFICULTIES, TASKS
from lad.data.templates import PromptTemplate


class SyntheticSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(description=f"one of {sorted(TASKS)}")
    n: int = Field(ge=1, description="number of problems")
    seed: int = Field(0, description="generator seed")
    difficulty: int = Field(1, description=f"one of {DIFFICULTIES}")

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in TASKS:
            raise ValueError(f"unknown synthetic task {v!r}; expected one of {sorted(TASKS)}")
        return v

    @field_validator("difficulty")
    @classmethod
    def _known_difficulty(cls, v: int) -> int:
        if v not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}")
        return v


class FallbackSource(BaseModel):
    """Where a source's rows come from when its own ``uri`` cannot be read (offline, a hub name
    that cannot be loaded, a missing file): another file read through its own adapter."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="local path, lad://<bundled file>, s3:// URI or hub name")
    format: Format = Field("auto", description="as the source's format")
    adapter: str = Field("generic", description=f"field mapping: one of {sorted(ADAPTERS)}")
    fields: FieldMap = Field(default_factory=FieldMap, description="field names, for the generic adapter")
    hf_split: Optional[str] = Field(None, description="split of a Hugging Face DatasetDict or hub dataset")
    limit: Optional[int] = Field(None, ge=1, description="read only the first N rows")

    @field_validator("adapter")
    @classmethod
    def _known_adapter(cls, v: str) -> str:
        return SourceConfig._known_adapter(v)


class SourceConfig(BaseModel):
    """One input set: a file, folder, hub name or s3:// URI read through an adapter, or a synthetic task."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]*$", description="the source's name in the report; unique in the run")
    data_source: Optional[str] = Field(None, min_length=1, description="data_source of its rows (rewards dispatch on it); None: name")
    role: Literal["train", "eval"] = Field("train", description="train rows are deduplicated and decontaminated against eval rows")
    uri: Optional[str] = Field(None, description="local path (relative to the working directory), s3:// URI or hub name")
    format: Format = Field("auto", description="auto: from the extension (folder: load_from_disk; 'owner/name': hub)")
    adapter: str = Field("generic", description=f"field mapping: one of {sorted(ADAPTERS)}")
    fields: FieldMap = Field(default_factory=FieldMap, description="field names, for the generic adapter")
    hf_split: Optional[str] = Field(None, description="split of a Hugging Face DatasetDict or hub dataset")
    limit: Optional[int] = Field(None, ge=1, description="read only the first N rows")
    synthetic: Optional[SyntheticSpec] = Field(None, description="generate the rows instead of reading uri")
    on_bad_row: Optional[Literal["fail", "skip"]] = Field(None, description="this source's policy; None: the run's")
    decontaminate: bool = Field(
        True,
        description="check this training source against the eval prompts (off for templated sets whose splits are "
        "disjoint by construction, such as the synthetic tasks: their shared phrasing would flag most rows)",
    )
    fallback: Optional[FallbackSource] = Field(
        None, description="read this instead when uri cannot be read (the report says so and why); None: fail")
    answer_fallback: Optional[str] = Field(
        None,
        description="math: a regex with one group, such as 'The answer is (.+)', that the reward reads when a response "
        "has no \\boxed{} (kept in each row's extra_info.answer_fallback); None: boxed answers only",
    )

    @field_validator("answer_fallback")
    @classmethod
    def _one_group(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        try:
            groups = re.compile(v).groups
        except re.error as err:
            raise ValueError(f"not a regular expression ({err})") from None
        if groups != 1:
            raise ValueError(f"needs exactly one group (the answer), {v!r} has {groups}")
        return v

    @field_validator("adapter")
    @classmethod
    def _known_adapter(cls, v: str) -> str:
        if v not in ADAPTERS:
            raise ValueError(f"unknown adapter {v!r}; expected one of {sorted(ADAPTERS)}")
        return v

    @model_validator(mode="after")
    def _one_origin(self) -> "SourceConfig":
        if (self.uri is None) == (self.synthetic is None):
            raise ValueError("give exactly one of uri and synthetic")
        if self.fallback is not None and self.synthetic is not None:
            raise ValueError("a fallback replaces a uri; a synthetic source has none")
        return self

    def on_fallback(self) -> "SourceConfig":
        """This source read from its fallback (same name, role and data_source)."""
        assert self.fallback is not None
        return self.model_copy(update={**self.fallback.model_dump(), "fields": self.fallback.fields, "fallback": None})


class PrepConfig(BaseModel):
    """Settings of ``lad data prep``; every default is documented by its field."""

    model_config = ConfigDict(extra="forbid")

    sources: list[SourceConfig] = Field(min_length=1, description="input sets, in priority order for deduplication")
    output: str = Field("out/data", description="output folder, local or s3://; published with a manifest")
    template: PromptTemplate = Field(default_factory=PromptTemplate, description="chat template, recorded in report.json")
    model: Optional[str] = Field(
        None,
        description="a model reference (as every stage's model:, e.g. smollm2-135m-instruct) whose tokenizer's chat "
        "template renders every prompt as the model will read it: a row the template refuses is a bad row, and the "
        "report shows the rendered first prompt and each source's prompt lengths in the model's tokens; None: no model",
    )
    max_prompt_tokens: Optional[int] = Field(
        None, ge=1,
        description="with model: a row whose rendered prompt is longer is a bad row (lad train would drop it at its "
        "max_prompt_len); None: no limit",
    )
    on_bad_row: Literal["fail", "skip"] = Field(
        "fail", description="fail: write nothing and report the bad rows; skip: write them to quarantine.jsonl"
    )
    dedup: bool = Field(True, description="drop training rows whose normalised prompt text was seen before")
    decontaminate: bool = Field(True, description="drop training rows sharing an n-gram with an eval prompt")
    ngram: int = Field(13, ge=1, description="n of the decontamination n-grams (whitespace tokens, lower-cased)")
    boilerplate_prompts: int = Field(
        10, ge=2,
        description="n-grams found in at least this many eval prompts are boilerplate (shared instructions), not content",
    )
    eval_layout: Literal["single", "per_source"] = Field(
        "single", description="single: eval.parquet; per_source: eval/<name>.parquet"
    )
    jsonl: bool = Field(False, description="also write every parquet as JSONL")
    show_errors: int = Field(20, ge=0, description="bad rows, and duplicate rows, listed in the report; the rest are counted")
    seed: int = Field(0, description="seed of the training-row shuffle")
    shuffle: bool = Field(True, description="shuffle train.parquet (eval files keep source order)")

    @field_validator("model")
    @classmethod
    def _model_ref(cls, v: Optional[str]) -> Optional[str]:
        from lad.modeling import check_model_ref

        return v if v is None else check_model_ref(v)

    @model_validator(mode="after")
    def _limit_needs_model(self) -> "PrepConfig":
        if self.max_prompt_tokens is not None and self.model is None:
            raise ValueError("max_prompt_tokens counts the tokens of a model: set model too")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> "PrepConfig":
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique; repeated: {dup}")
        return self


def load_config(path: str | Path) -> PrepConfig:
    """Read a YAML prep config; errors name the file and the field path."""
    return load_yaml_config(path, PrepConfig)
