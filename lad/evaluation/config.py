"""The evaluation stage's configuration: one pydantic object, loadable from YAML.

A benchmark entry names a registered benchmark (see :mod:`lad.evaluation.benchmarks`) and
overrides any of its defaults; everything left out keeps the registry's value, so

    benchmarks: [{name: math500}, {name: humanevalplus, k: 4, limit: 20}]

evaluates MATH-500 with k=32 and its registered sampling settings, and the first 20 HumanEval+
problems with 4 samples each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lad.config import ConfigError, format_validation, load_yaml_config  # noqa: F401  (re-exported for callers)
from lad.data.templates import PromptTemplate


class Sampling(BaseModel):
    """How the k samples of a problem are drawn (the rollout engine's SamplingParams minus n and seed)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.6, ge=0, description="softmax temperature; 0: greedy decoding, one response per problem (k = 1)")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling mass")
    max_new_tokens: int = Field(4096, gt=0, description="response budget; longer responses are cut (finish_reason 'length')")
    stop: list[str] = Field(default_factory=list, description="extra stop strings besides the tokenizer's EOS")


class BenchmarkOverrides(BaseModel):
    """One benchmark of a run: a registry name and the defaults it overrides (None: keep the registry's)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="a registered benchmark (lad eval list)")
    k: Optional[int] = Field(
        None, ge=1, description="samples per problem; Avg@k and Pass@k use this k; None: the registry's, or 1 at temperature 0"
    )
    limit: Optional[int] = Field(None, ge=1, description="evaluate only the first N problems")
    temperature: Optional[float] = Field(None, ge=0, description="0: greedy decoding (then k must be 1)")
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_new_tokens: Optional[int] = Field(None, gt=0)
    stop: Optional[list[str]] = None
    uri: Optional[str] = Field(
        None,
        description="read the problems from here instead of the registered source: a raw file for the benchmark's "
        "adapter, or (records: true) canonical records (data prep's parquet or JSONL, local or s3://)",
    )
    records: bool = Field(False, description="uri holds canonical records already (the output of lad data prep)")
    n: Optional[int] = Field(None, ge=1, description="synthetic benchmarks: number of problems")
    difficulty: Optional[int] = Field(None, description="synthetic benchmarks: difficulty")
    seed: Optional[int] = Field(None, description="synthetic benchmarks: generator seed")

    @model_validator(mode="after")
    def _records_need_uri(self) -> "BenchmarkOverrides":
        if self.records and not self.uri:
            raise ValueError("records: true needs a uri")
        return self

    @model_validator(mode="after")
    def _greedy_is_one_sample(self) -> "BenchmarkOverrides":
        # k greedy responses are one response k times: Avg@k would be Avg@1 and Pass@k no pass at k.
        if self.temperature == 0 and self.k not in (None, 1):
            raise ValueError(f"temperature 0 decodes greedily, so the k = {self.k} responses of a problem would be one "
                             "response repeated; set k to 1 (or a temperature > 0 to sample k)")
        return self


class EvalConfig(BaseModel):
    """Settings of ``lad eval run``; every default is documented by its field."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="checkpoint: a Hugging Face model directory, s3:// URI or hf://org/name")
    benchmarks: list[BenchmarkOverrides] = Field(min_length=1, description="what to evaluate, in order")
    output: str = Field("out/eval", description="local output folder; results are appended there as they come")
    label: Optional[str] = Field(None, description="the model's name in reports and comparisons; None: the checkpoint's folder name")
    engine: str = Field("hf", description="rollout engine (lad.rollout.ENGINES): hf, native (own decode loop, fastest on CPU) or vllm (GPU)")
    engine_options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the rollout engine")
    dtype: Optional[str] = Field(None, description="weights dtype for loading (float32, bfloat16, float16); None: the checkpoint's")
    problems_per_batch: int = Field(
        8, ge=1, description="problems generated and scored together; an interruption loses at most one batch"
    )
    seed: int = Field(0, description="base seed; each batch's sampling seed derives from it, the benchmark and the batch")
    benchmarks_dir: Optional[str] = Field(
        None,
        description="folder (or s3:// prefix) of your own copies of the benchmark files, plain or .gz; "
        "None: $LAD_DATA_DIR, then the files bundled with lad",
    )
    template: PromptTemplate = Field(default_factory=PromptTemplate, description="chat template (as in data prep)")
    sandbox_url: Optional[str] = Field(None, description="code scoring: sandbox service URL; None: $LAD_SANDBOX_URL or in-process")
    code_timeout_s: float = Field(10.0, gt=0, description="code scoring: wall-clock limit per test case")
    verifier_workers: int = Field(2, ge=1, description="math scoring: math-verify worker processes")
    bootstrap_resamples: int = Field(1000, ge=10, description="resamples of the Avg@k bootstrap CI")
    dist_n: list[int] = Field([1, 2, 3, 4], description="n of the dist-n diversity metrics")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        from lad.rollout import ENGINES

        if v not in ENGINES:
            raise ValueError(f"unknown rollout engine {v!r}; expected one of {sorted(ENGINES)}")
        return v

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {v!r}")
        return v

    @field_validator("dist_n")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(n < 1 for n in v):
            raise ValueError("dist_n needs one or more n >= 1")
        return v

    @model_validator(mode="after")
    def _unique(self) -> "EvalConfig":
        names = [b.name for b in self.benchmarks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"benchmark names must be unique in a run; repeated: {dup}")
        return self


def load_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> EvalConfig:
    """Read a YAML eval config, apply overrides; errors name the file and the field path."""
    return load_yaml_config(path, EvalConfig, overrides)
