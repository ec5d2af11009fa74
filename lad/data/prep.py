"""The data prep stage: sources -> canonical train/eval parquet, a quarantine file and report.json.

Every row is read, mapped by its source's adapter, templated and validated against the canonical
schema. Bad rows are listed (file, line, field, reason). With ``on_bad_row: fail`` any bad row
stops the run before anything is written; with ``skip`` they go to quarantine.jsonl. Training rows
are then deduplicated on their normalised prompt text (first source in the config wins) and
dropped when they share an n-gram with any eval prompt of the run. The output folder is assembled
in a temporary directory and published through lad.storage (files first, manifest last), so a
crashed run never leaves a folder that passes for a whole one.
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from pydantic import ValidationError

from lad.data.adapters import ADAPTERS, RowError
from lad.data.config import PrepConfig, SourceConfig
from lad.data.filters import ContaminationIndex, normalise
from lad.data.model_prompts import ModelPrompts, length_stats
from lad.data.readers import RawRow, SourceError, detect_format, fetch, read_rows
from lad.data.schema import Problem, build_record
from lad.data.synthetic import problems as synthetic_problems

REPORT = "report.json"
QUARANTINE = "quarantine.jsonl"
TRAIN = "train.parquet"
EVAL = "eval.parquet"
TEMPLATE_METADATA_KEY = b"lad.prompt_template"


class PrepError(RuntimeError):
    """The run stopped; ``report`` (when set) says why, row by row."""

    def __init__(self, message: str, report: Optional[dict] = None):
        super().__init__(message)
        self.report = report


@dataclass
class Counts:
    read: int = 0
    kept: int = 0
    rejected: int = 0
    duplicate: int = 0
    contaminated: int = 0


@dataclass
class RowIssue:
    source: str
    file: str
    where: str
    field: Optional[str]
    reason: str

    def __str__(self) -> str:
        return f"{self.file}, {self.where}" + (f", field {self.field}" if self.field else "") + f": {self.reason}"


@dataclass
class Duplicate:
    """A training row dropped because an earlier row (this source or another) has its prompt."""

    source: str
    file: str
    where: str
    first_source: str
    first_file: str
    first_where: str

    def __str__(self) -> str:
        return f"{self.file}, {self.where}: duplicate of {self.first_file}, {self.first_where}"


@dataclass
class _Row:
    record: dict
    text: str  # the problem as the model reads it, without template
    file: str = ""  # where it was read: the source's display name and the row's place in it
    where: str = ""
    prompt_tokens: Optional[int] = None  # with PrepConfig.model: the rendered prompt's length


@dataclass
class _SourceResult:
    config: SourceConfig
    counts: Counts = field(default_factory=Counts)
    rows: list[_Row] = field(default_factory=list)
    issues: list[RowIssue] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    fallback_reason: str = ""  # why the source's own uri could not be read, when its fallback was


def policy(src: SourceConfig, cfg: PrepConfig) -> str:
    return src.on_bad_row or cfg.on_bad_row


def split_of(role: str) -> str:
    return "train" if role == "train" else "test"


# --------------------------------------------------------------------------------------------
# reading and validating
# --------------------------------------------------------------------------------------------


def _raw_problems(src: SourceConfig, workdir: Path) -> tuple[str, Iterator[tuple[RawRow, Problem | RowError]]]:
    """The source's display name and its rows, each with a Problem or the error that prevents one."""
    if src.synthetic is not None:
        spec = src.synthetic
        try:
            made = synthetic_problems(spec.task, spec.n, seed=spec.seed, difficulty=spec.difficulty, split=split_of(src.role))
        except ValueError as err:
            raise SourceError(str(err)) from None
        return f"synthetic:{spec.task}", ((RawRow(i, f"row {i}", None), p) for i, p in enumerate(made))
    assert src.uri is not None
    fmt = detect_format(src.uri, src.format)
    local = fetch(src.uri, fmt, workdir)
    adapter = ADAPTERS[src.adapter]

    def rows() -> Iterator[tuple[RawRow, Problem | RowError]]:
        for raw in read_rows(local, fmt, hf_split=src.hf_split):
            if src.limit is not None and raw.position >= src.limit:
                return
            if raw.data is None:
                yield raw, RowError(None, raw.error or "unreadable row")
                continue
            try:
                yield raw, adapter(raw.data, src.fields)
            except RowError as err:
                yield raw, err

    return src.uri, rows()


def _quarantine_entry(issue: RowIssue, raw: RawRow) -> dict:
    entry = asdict(issue)
    entry["row"] = raw.data if raw.data is not None else raw.text
    return entry


def read_source(src: SourceConfig, cfg: PrepConfig, workdir: Path, progress: Callable[[str, int], None],
                model: Optional[ModelPrompts] = None) -> _SourceResult:
    """Every row of one source, validated (and, with ``model``, rendered with its chat template);
    bad rows become issues (and quarantine entries)."""
    result = _SourceResult(src)
    name, rows = _raw_problems(src, workdir)
    split = split_of(src.role)
    for raw, made in rows:
        result.counts.read += 1
        progress(src.name, result.counts.read)
        if isinstance(made, Problem):
            if src.answer_fallback and made.ability == "math":
                made.extra["answer_fallback"] = src.answer_fallback
            try:
                record = build_record(made, data_source=src.data_source or src.name, index=raw.position, split=split, template=cfg.template)
                tokens = model.tokens(record["prompt"]) if model is not None else None
                result.rows.append(_Row(record, made.text(), name, raw.where, tokens))
                continue
            except RowError as err:
                made = err
            except ValidationError as err:
                first = err.errors()[0]
                made = RowError(".".join(map(str, first["loc"])) or None, first["msg"].removeprefix("Value error, "))
            except ValueError as err:
                made = RowError(None, str(err))
        result.counts.rejected += 1
        issue = RowIssue(src.name, name, raw.where, made.field, made.reason)
        result.issues.append(issue)
        if policy(src, cfg) == "skip":
            result.quarantined.append(_quarantine_entry(issue, raw))
    return result


# --------------------------------------------------------------------------------------------
# filtering
# --------------------------------------------------------------------------------------------


def filter_train(results: list[_SourceResult], cfg: PrepConfig) -> int:
    """Deduplicate and decontaminate the training rows in place; returns the number of boilerplate n-grams ignored."""
    evals = [r for r in results if r.config.role == "eval"]
    index = ContaminationIndex((row.text for r in evals for row in r.rows), cfg.ngram, cfg.boilerplate_prompts)
    seen: dict[str, tuple[str, _Row]] = {}  # normalised prompt -> (source, the first row with it)
    for r in results:
        if r.config.role != "train":
            continue
        kept = []
        for row in r.rows:
            key = normalise(row.text)
            if cfg.dedup and key in seen:
                r.counts.duplicate += 1
                first_source, first = seen[key]
                r.duplicates.append(Duplicate(r.config.name, row.file, row.where, first_source, first.file, first.where))
                continue
            seen[key] = (r.config.name, row)
            if cfg.decontaminate and r.config.decontaminate and evals and index.contaminated(row.text):
                r.counts.contaminated += 1
                continue
            kept.append(row)
        r.rows = kept
    for r in results:
        r.counts.kept = len(r.rows)
    return len(index.boilerplate) if cfg.decontaminate and evals else 0


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _write_table(records: list[dict], path: Path, cfg: PrepConfig) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise PrepError(
            f"{path.name}: rows from different sources disagree on a field's type ({err}); "
            "keep such metadata out of extra_info (FieldMap.keep) or split the sources"
        ) from None
    template = json.dumps(cfg.template.model_dump(mode="json"))
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), TEMPLATE_METADATA_KEY: template.encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    if cfg.jsonl:
        with path.with_suffix(".jsonl").open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _report(cfg: PrepConfig, results: list[_SourceResult], status: str, outputs: dict, boilerplate: int,
            model: Optional[ModelPrompts] = None) -> dict:
    issues = [i for r in results for i in r.issues]
    duplicates = [d for r in results for d in r.duplicates]
    sources = {
        r.config.name: {
            "role": r.config.role,
            "uri": r.config.uri,
            "adapter": "synthetic" if r.config.synthetic else r.config.adapter,
            "on_bad_row": policy(r.config, cfg),
            **({"fallback_reason": r.fallback_reason} if r.fallback_reason else {}),
            **asdict(r.counts),
            **({"prompt_tokens": length_stats([row.prompt_tokens for row in r.rows])} if model is not None else {}),
        }
        for r in results
    }
    first = next((row.record["prompt"] for r in results for row in r.rows), None)
    totals = {k: sum(s[k] for s in sources.values()) for k in asdict(Counts())}
    return {
        "status": status,
        "sources": sources,
        "totals": totals,
        "outputs": outputs,
        "errors": [asdict(i) | {"message": str(i)} for i in issues[: cfg.show_errors]],
        "errors_total": len(issues),
        "duplicates": [asdict(d) | {"message": str(d)} for d in duplicates[: cfg.show_errors]],
        "duplicates_total": len(duplicates),
        "boilerplate_ngrams_ignored": boilerplate,
        "template": cfg.template.model_dump(mode="json"),
        "model_prompts": model.summary(first) if model is not None else None,
        "config": cfg.model_dump(mode="json"),
    }


def _check_output(uri: str) -> None:
    """Refuse to publish over a folder that is not a previous prep output (publishing prunes foreign files)."""
    if uri.startswith("s3://"):
        return  # a key prefix: publishing removes only keys under it, which this stage owns
    out = Path(uri)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / REPORT).is_file())):
        raise PrepError(f"output {uri}: exists and is not a data prep output (no {REPORT}); choose an empty or new folder")


def _model_prompts(cfg: PrepConfig) -> Optional[ModelPrompts]:
    if cfg.model is None:
        return None
    from lad.modeling import ModelError

    try:
        return ModelPrompts(cfg.model, cfg.max_prompt_tokens)
    except (ModelError, FileNotFoundError, ValueError) as err:
        raise PrepError(f"model: {err}") from None


def run_prep(cfg: PrepConfig, *, progress: Optional[Callable[[str, int], None]] = None) -> dict:
    """Run the stage; returns the report. Raises PrepError (with the report) when rows are bad under ``fail``."""
    from lad import storage

    _check_output(cfg.output)
    tick = progress or (lambda name, n: None)
    model = _model_prompts(cfg)
    with tempfile.TemporaryDirectory(prefix="lad-prep-") as tmp:
        work, stage = Path(tmp) / "download", Path(tmp) / "out"
        work.mkdir()
        stage.mkdir()
        results = []
        for src in cfg.sources:
            try:
                results.append(read_source(src, cfg, work, tick, model))
            except SourceError as err:
                if src.fallback is None:
                    raise PrepError(f"source {src.name}: {err}") from None
                print(f"data prep: source {src.name}: {err}; reading its fallback {src.fallback.uri}", flush=True)
                try:
                    results.append(read_source(src.on_fallback(), cfg, work, tick, model))
                except SourceError as fallback_err:
                    raise PrepError(f"source {src.name}: {err}; its fallback: {fallback_err}") from None
                results[-1].fallback_reason = str(err)
        if any(r.issues and policy(r.config, cfg) == "fail" for r in results):
            report = _report(cfg, results, "failed", {}, 0, model)
            total = report["errors_total"]
            shown = "\n".join(f"  {e['message']}" for e in report["errors"])
            more = f"\n  ... and {total - len(report['errors'])} more" if total > len(report["errors"]) else ""
            raise PrepError(f"{total} bad row(s); nothing written (on_bad_row: fail):\n{shown}{more}", report)
        boilerplate = filter_train(results, cfg)

        outputs: dict[str, int] = {}
        train = [row.record for r in results if r.config.role == "train" for row in r.rows]
        if cfg.shuffle:
            random.Random(cfg.seed).shuffle(train)
        if any(r.config.role == "train" for r in results):
            _write_table(train, stage / TRAIN, cfg)
            outputs[TRAIN] = len(train)
        evals = [r for r in results if r.config.role == "eval"]
        if evals and cfg.eval_layout == "single":
            records = [row.record for r in evals for row in r.rows]
            _write_table(records, stage / EVAL, cfg)
            outputs[EVAL] = len(records)
        for r in evals if cfg.eval_layout == "per_source" else []:
            name = f"eval/{r.config.name.replace('/', '__')}.parquet"
            _write_table([row.record for row in r.rows], stage / name, cfg)
            outputs[name] = len(r.rows)
        quarantined = [q for r in results for q in r.quarantined]
        if quarantined:
            with (stage / QUARANTINE).open("w", encoding="utf-8") as fh:
                for q in quarantined:
                    fh.write(json.dumps(q, ensure_ascii=False, default=str) + "\n")
            outputs[QUARANTINE] = len(quarantined)
        report = _report(cfg, results, "ok", outputs, boilerplate, model)
        (stage / REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False))
        try:
            storage.put_dir(stage, cfg.output)
        except storage.StorageError as err:
            raise PrepError(f"publishing {cfg.output}: {err}") from None
    return report
