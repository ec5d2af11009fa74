"""The benchmark registry: each evaluation set with its source, default k, sampling and scorer.

Problems are read through the data-prep adapters (the same mapping, templating and validation
as ``lad data prep``), so an eval run and a prepped eval parquet see identical records. The
defaults follow the paper: k = 32 for math (Avg@32 / Pass@32), k = 16 for code.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict

from lad.data.public import locate
from lad.evaluation.config import BenchmarkOverrides, EvalConfig, Sampling

MATH_K = 32
CODE_K = 16
MATH_SAMPLING = Sampling(temperature=0.6, top_p=0.95, max_new_tokens=4096)
CODE_SAMPLING = Sampling(temperature=0.6, top_p=0.95, max_new_tokens=8192)
# held-out synthetic problems: the generators' "test" split never overlaps their "train" split
SYNTHETIC_N, SYNTHETIC_SEED = 512, 1234


class BenchmarkError(RuntimeError):
    """A benchmark cannot be set up or read; the message names it and the file/row at fault."""


@dataclass(frozen=True)
class Benchmark:
    """A registered evaluation set: a public benchmark file read by its adapter, or a synthetic task."""

    name: str
    ability: Literal["math", "code"]
    description: str
    file: Optional[str] = None  # bundled with lad (lad.data.public) or under EvalConfig.benchmarks_dir
    adapter: Optional[str] = None
    task: Optional[str] = None  # synthetic task
    data_source: Optional[str] = None  # None: the name (rewards dispatch on it)

    @property
    def scorer(self) -> str:
        return self.ability

    @property
    def k(self) -> int:
        return MATH_K if self.ability == "math" else CODE_K

    @property
    def sampling(self) -> Sampling:
        return MATH_SAMPLING if self.ability == "math" else CODE_SAMPLING


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("math500", "math", "MATH-500 (PRM800K test split)", "math500.jsonl", "math500"),
        Benchmark("aime24", "math", "AIME 2024 I+II", "aime24.jsonl", "aime24"),
        Benchmark("amc23", "math", "AMC 2023", "amc23.jsonl", "amc23"),
        Benchmark("amc22_23", "math", "AMC 2022+2023", "amc22_23.jsonl", "amc22_23"),
        Benchmark("olympiadbench", "math", "OlympiadBench OE_TO_maths_en_COMP", "olympiadbench.jsonl", "olympiadbench"),
        Benchmark("minerva_math", "math", "Minerva Math (OCW courses)", "minerva_math.jsonl", "minerva_math"),
        Benchmark("gsm8k", "math", "GSM8K test", "gsm8k_test.jsonl", "gsm8k"),
        Benchmark("humaneval", "code", "HumanEval (check() tests)", "humaneval.jsonl", "humaneval"),
        Benchmark("humanevalplus", "code", "HumanEval+ v0.1.10 (base and plus inputs)", "humanevalplus.jsonl", "humanevalplus"),
        Benchmark("mbppplus", "code", "MBPP+ v0.2.0 (base and plus inputs)", "mbppplus.jsonl", "mbppplus"),
        Benchmark("livecodebench", "code", "LiveCodeBench 2024-08..2025-02, public tests", "livecodebench_public.jsonl", "livecodebench"),
        Benchmark("codecontests", "code", "CodeContests test split (stdin/stdout)", "codecontests_test.jsonl", "codecontests"),
        Benchmark("synthetic_countdown", "math", "synthetic countdown, held-out split", task="countdown", data_source="synthetic/countdown"),
        Benchmark("synthetic_arithmetic", "math", "synthetic arithmetic word problems, held-out split", task="arithmetic", data_source="synthetic/arithmetic"),
        Benchmark("synthetic_code", "code", "synthetic one-function code tasks, held-out split", task="code", data_source="synthetic/code"),
    )
}


class BenchmarkRun(BaseModel):
    """A benchmark with the run's overrides applied: exactly what an evaluation uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    ability: Literal["math", "code"]
    scorer: str
    k: int
    limit: Optional[int]
    sampling: Sampling
    source: dict  # where the problems come from (file/adapter, records URI, or synthetic spec)


def resolve(over: BenchmarkOverrides, cfg: EvalConfig) -> BenchmarkRun:
    """Registry defaults with the config's overrides applied."""
    if over.name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {over.name!r}; registered: {sorted(BENCHMARKS)}")
    bench = BENCHMARKS[over.name]
    sampling = bench.sampling.model_copy(
        update={f: getattr(over, f) for f in ("temperature", "top_p", "max_new_tokens", "stop") if getattr(over, f) is not None}
    )
    data_source = bench.data_source or bench.name
    if over.records:
        source = {"records": over.uri}
    elif bench.task is not None:
        if over.uri:
            raise BenchmarkError(f"benchmark {bench.name}: a synthetic set has no file; uri is only for records: true")
        source = {
            "task": bench.task, "n": over.n or SYNTHETIC_N, "seed": SYNTHETIC_SEED if over.seed is None else over.seed,
            "difficulty": over.difficulty or 1, "data_source": data_source,
        }
    else:
        if over.n is not None or over.difficulty is not None or over.seed is not None:
            raise BenchmarkError(f"benchmark {bench.name}: n, difficulty and seed apply to synthetic benchmarks only")
        try:
            uri = over.uri or locate(bench.file, cfg.benchmarks_dir)
        except FileNotFoundError as err:
            raise BenchmarkError(f"benchmark {bench.name}: {err}") from None
        source = {"uri": uri, "adapter": bench.adapter, "data_source": data_source}
    return BenchmarkRun(
        name=bench.name, ability=bench.ability, scorer=bench.scorer, k=over.k or (1 if sampling.temperature == 0 else bench.k),
        limit=over.limit,
        sampling=sampling, source=source,
    )


def load_records(run: BenchmarkRun, cfg: EvalConfig) -> list[dict]:
    """The benchmark's canonical records (at most ``limit``), in source order; any bad row is an error."""
    if "records" in run.source:
        from lad.data.records import DataError, read_records

        try:
            records = read_records(run.source["records"], f"benchmark {run.name}")
        except DataError as err:
            raise BenchmarkError(str(err)) from None
    else:
        records = _prep_records(run, cfg)
    return records[: run.limit] if run.limit else records


def _prep_records(run: BenchmarkRun, cfg: EvalConfig) -> list[dict]:
    from lad.data.config import PrepConfig, SourceConfig, SyntheticSpec
    from lad.data.prep import read_source
    from lad.data.readers import SourceError

    src = run.source
    if "task" in src:
        spec = SyntheticSpec(task=src["task"], n=src["n"], seed=src["seed"], difficulty=src["difficulty"])
        source = SourceConfig(name=run.name, data_source=src["data_source"], role="eval", synthetic=spec)
    else:
        source = SourceConfig(
            name=run.name, data_source=src["data_source"], role="eval", uri=src["uri"], adapter=src["adapter"], limit=run.limit
        )
    prep = PrepConfig(sources=[source], template=cfg.template)
    try:
        with tempfile.TemporaryDirectory(prefix="lad-eval-") as workdir:
            result = read_source(source, prep, Path(workdir), lambda name, n: None)
    except SourceError as err:
        raise BenchmarkError(f"benchmark {run.name}: {err}") from None
    if result.issues:
        shown = "; ".join(str(i) for i in result.issues[:3])
        raise BenchmarkError(f"benchmark {run.name}: {len(result.issues)} bad row(s): {shown}")
    return [row.record for row in result.rows]

