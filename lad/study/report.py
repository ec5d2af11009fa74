"""The study's outputs from its runs' result.json files: one table (study.md, study.json) and two
figures (pass_at_k.png: held-out Pass@k per arm with a band over seeds; validation_curve.png:
validation Avg@k over training steps per arm).

Per arm, every metric is the mean over seeds with a Student-t 95% interval. Each arm is compared
with the reference by a paired bootstrap over test problems and the seeds both ran. Settings are
chosen on validation only: per group the arm with the best final validation Avg@k is marked.
The first row is the warm start itself, evaluated on the test set as every run is: what each arm
gained is its row minus that one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from lad.study.config import StudyConfig
from lad.study.grid import Arm
from lad.storage import write_atomic
from lad.study.stats import holm, paired_bootstrap, seed_interval
from lad.study.worker import PAIRED, RESULT, TEST_METRICS, WARM_START_ARM, WARM_START_TEST

# The table's columns, in order (study.md and each row of study.json's "table").
COLUMNS = ("group", "arm", "objective", "divergence", "kappa", "seeds", "steps", "val_avg@k", *TEST_METRICS,
           "train_min", "delta_avg@8", "delta_avg@8_ci95", "p_avg@8", "p_holm_avg@8")
PERCENT = {"val_avg@k", "avg@8", "pass@1", "pass@4", "pass@16", "maj@8", "delta_avg@8"}


def load_results(out: Path, arms: list[Arm]) -> dict[str, dict[int, dict]]:
    """arm name -> seed -> its result.json."""
    return {a.name: {s: json.loads((out / "runs" / a.name / f"seed{s}" / RESULT).read_text()) for s in a.seeds} for a in arms}


def load_warm_start(out: Path) -> dict:
    """The warm start's test evaluation (OUTPUT/warm_start_test/result.json)."""
    return json.loads((out / WARM_START_TEST / RESULT).read_text())


def _final_validation(result: dict) -> float:
    last = result["validation"][-1]
    return next(v for k, v in last.items() if k.startswith("avg@"))


def compare(arm: dict[int, dict], reference: dict[int, dict], metric: str, *, resamples: int, seed: int) -> Optional[dict]:
    """Paired bootstrap of ``metric`` per problem, on the seeds both arms ran; None if they share none."""
    seeds = sorted(set(arm) & set(reference))
    if not seeds:
        return None
    for s in seeds:
        if arm[s]["test"]["problems"] != reference[s]["test"]["problems"]:
            raise ValueError(f"seed {s}: the two arms were evaluated on different test problems")
    return paired_bootstrap([arm[s]["test"]["per_problem"][metric] for s in seeds],
                            [reference[s]["test"]["per_problem"][metric] for s in seeds], resamples=resamples, seed=seed)


def _cells(runs: list[dict]) -> dict:
    """Per metric: the mean over ``runs`` with its interval and the per-run values."""
    per_seed = {m: [r["test"]["metrics"][m] for r in runs] for m in TEST_METRICS}
    return {m: seed_interval(v) | {"per_seed": v} for m, v in per_seed.items()}


def warm_start_row(group: str, warm: dict, reference: dict[int, dict], cfg: StudyConfig) -> tuple[dict, dict]:
    """The baseline row and its comparisons: its one test evaluation paired with every seed of the
    reference; its validation score is the reference runs' evaluation before their first step."""
    at_start = [next(v for k, v in r["validation"][0].items() if k.startswith("avg@")) for r in reference.values()
                if r["validation"] and r["validation"][0]["step"] == 0]
    paired = {m: compare({s: warm for s in reference}, reference, m, resamples=cfg.bootstrap.resamples,
                         seed=cfg.bootstrap.seed) for m in PAIRED}
    c = paired["avg@8"]
    row = {"group": group, "arm": WARM_START_ARM, "objective": None, "divergence": None, "kappa": None, "seeds": [],
           "steps": 0, **_cells([warm]), "val_avg@k": seed_interval(at_start) | {"per_seed": at_start} if at_start else None,
           "train_min": None, "delta_avg@8": c["diff"], "delta_avg@8_ci95": [c["ci_low"], c["ci_high"]], "p_avg@8": c["p_value"]}
    return row, paired


def summarise(cfg: StudyConfig, arms: list[Arm], results: dict[str, dict[int, dict]], warm: dict) -> dict:
    """The table (the warm start, then one row per arm and group), the comparisons and the
    validation choice per group."""
    ref = results[cfg.reference]
    first_group = next(a for a in arms if a.name == cfg.reference).groups[0]
    baseline, paired = warm_start_row(first_group, warm, ref, cfg)
    rows, comparisons = [baseline], {WARM_START_ARM: paired}
    for arm in arms:
        runs = results[arm.name]
        cells = _cells(list(runs.values()))
        for name, values in (("val_avg@k", [_final_validation(r) for r in runs.values()]),
                             ("train_min", [r["train_s"] / 60 for r in runs.values()])):
            cells[name] = seed_interval(values) | {"per_seed": values}
        comparisons[arm.name] = {} if arm.name == cfg.reference else {
            m: compare(runs, ref, m, resamples=cfg.bootstrap.resamples, seed=cfg.bootstrap.seed) for m in PAIRED}
        c = comparisons[arm.name].get("avg@8")
        for group in arm.groups:
            rows.append({
                "group": group, "arm": arm.name, "objective": arm.objective, "divergence": arm.describe("divergence"),
                "kappa": arm.describe("kappa"), "seeds": sorted(runs), "steps": max(r["steps"] for r in runs.values()),
                **cells,
                "delta_avg@8": c["diff"] if c else None,
                "delta_avg@8_ci95": [c["ci_low"], c["ci_high"]] if c else None,
                "p_avg@8": c["p_value"] if c else None,
            })
    adjust_p(rows, comparisons)
    chosen = {}
    trained = [r for r in rows if r["arm"] != WARM_START_ARM]
    for group in dict.fromkeys(r["group"] for r in trained):
        best = max((r for r in trained if r["group"] == group), key=lambda r: r["val_avg@k"]["mean"])
        chosen[group] = best["arm"]
    return {"name": cfg.name, "reference": cfg.reference, "columns": list(COLUMNS), "table": rows,
            "comparisons": comparisons, "chosen_on_validation": chosen,
            "test_problems": len(next(iter(ref.values()))["test"]["problems"]), "k": next(iter(ref.values()))["test"]["k"],
            "validation_k": cfg.evaluation.validation_k}


def adjust_p(rows: list[dict], comparisons: dict[str, dict]) -> None:
    """Holm-adjusted p-values over every trained arm's comparison with the reference, per metric
    (``p_holm`` in each comparison, ``p_holm_avg@8`` in the rows): the study tests them together.
    The warm start's comparison is left out of the family (it is the baseline, not a candidate)."""
    arms = [a for a, c in comparisons.items() if c and a != WARM_START_ARM]
    for metric in PAIRED:
        for arm, p in zip(arms, holm([comparisons[a][metric]["p_value"] for a in arms])):
            comparisons[arm][metric]["p_holm"] = p
    for row in rows:
        c = comparisons.get(row["arm"], {}).get("avg@8") if row["arm"] != WARM_START_ARM else None
        row["p_holm_avg@8"] = c["p_holm"] if c else None


def _cell(column: str, value) -> str:
    if value is None:
        return "-"
    scale = 100 if column in PERCENT else 1
    if isinstance(value, dict):  # a mean over seeds with its interval
        mean = f"{scale * value['mean']:.1f}" if scale == 100 else f"{value['mean']:.2f}"
        if value["ci_low"] is None:
            return mean
        half = scale * (value["ci_high"] - value["ci_low"]) / 2
        return f"{mean} ± {half:.1f}" if scale == 100 else f"{mean} ± {half:.2f}"
    if column == "delta_avg@8_ci95":
        return f"[{100 * value[0]:+.1f}, {100 * value[1]:+.1f}]"
    if column == "seeds":
        return ",".join(map(str, value)) or "-"
    if column == "delta_avg@8":
        return f"{100 * value:+.1f}"
    if column in ("p_avg@8", "p_holm_avg@8"):
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def markdown(summary: dict) -> str:
    k, vk = summary["k"], summary["validation_k"]
    lines = [
        f"# Study {summary['name']}",
        "",
        f"Held-out test: {summary['test_problems']} problems, {k} samples each (Avg@8 and maj@8 from the first 8). "
        f"Each cell: mean over seeds ± half the Student-t 95% interval; percent for accuracies. val_avg@k: final "
        f"validation Avg@{vk}, the only number settings are chosen by. delta_avg@8: test Avg@8 minus {summary['reference']}'s "
        "(points), its paired bootstrap 95% CI over problems and shared seeds, and the two-sided p-value; p_holm_avg@8: "
        "that p-value adjusted (Holm) for the comparisons of every arm with the reference, made together. "
        f"{WARM_START_ARM}: the model every arm starts from, evaluated the same way (its val_avg@k: the reference runs' "
        "validation before their first step).",
        "",
        "| " + " | ".join(summary["columns"]) + " |",
        "|" + "---|" * len(summary["columns"]),
    ]
    for row in summary["table"]:
        lines.append("| " + " | ".join(_cell(c, row[c]) for c in summary["columns"]) + " |")
    lines += ["", "Chosen on validation (best final validation Avg@k per group): "
              + ", ".join(f"{g}: {a}" for g, a in summary["chosen_on_validation"].items()), ""]
    return "\n".join(lines)


def _band(ax, xs, series: list[list[float]], label: str) -> None:
    import numpy as np

    values = np.asarray(series, dtype=float)
    line = ax.plot(xs, values.mean(axis=0), marker="o", ms=3, label=label)[0]
    if len(series) > 1:
        ax.fill_between(xs, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)


def figures(summary: dict, arms: list[Arm], results: dict[str, dict[int, dict]], warm: dict, out: Path) -> list[Path]:
    """Pass@k per arm (and of the warm start, dashed) and validation Avg@k over steps per arm, one
    panel per group, bands over seeds (min to max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(summary["chosen_on_validation"])
    paths = []
    for name, draw in (("pass_at_k.png", _pass_panel), ("validation_curve.png", _curve_panel)):
        fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
        for ax, group in zip(axes[0], groups):
            if draw is _pass_panel:
                curve = warm["test"]["pass_curve"]
                ax.plot(range(1, len(curve) + 1), curve, "k--", lw=1, label=WARM_START_ARM)
            for arm in (a for a in arms if group in a.groups):
                draw(ax, arm, results[arm.name])
            ax.set_title(group)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / name
        tmp = path.with_name(f".tmp.{name}")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(path)
        paths.append(path)
    return paths


def _pass_panel(ax, arm: Arm, runs: dict[int, dict]) -> None:
    curves = [r["test"]["pass_curve"] for r in runs.values()]
    _band(ax, list(range(1, len(curves[0]) + 1)), curves, arm.name)
    ax.set(xlabel="k", ylabel="held-out Pass@k", xscale="log")


def _curve_panel(ax, arm: Arm, runs: dict[int, dict]) -> None:
    # steps common to every seed (a run cut by a time budget may stop earlier than the others)
    common = sorted(set.intersection(*({c["step"] for c in r["validation"]} for r in runs.values())))
    series = []
    for r in runs.values():
        at = {c["step"]: next(v for k, v in c.items() if k.startswith("avg@")) for c in r["validation"]}
        series.append([at[s] for s in common])
    _band(ax, common, series, arm.name)
    ax.set(xlabel="RL step", ylabel="validation Avg@k")


def write_report(cfg: StudyConfig, arms: list[Arm], out: Path) -> list[Path]:
    results, warm = load_results(out, arms), load_warm_start(out)
    summary = summarise(cfg, arms, results, warm)
    write_atomic(out / "study.json", json.dumps(summary, indent=2))
    write_atomic(out / "study.md", markdown(summary))
    return [out / "study.md", out / "study.json", *figures(summary, arms, results, warm, out)]

