"""Readable evaluation reports: Markdown and HTML with matplotlib plots.

``write_report`` renders one run's summary.json (a metrics table per benchmark, Pass@k curves);
``write_comparison`` puts several runs side by side (e.g. SFT vs LAD vs GRPO) in one table and
one figure. Both build a list of blocks (headings, paragraphs, tables, images) once and render
it twice, so the Markdown and the HTML always say the same thing. Files are written under a
temporary name and renamed.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from lad.storage import atomic_path, write_atomic

PLOTS = "plots"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: str  # relative to the report
    alt: str


Block = Union[str, Table, Image]  # a str starting with "#" is a heading, else a paragraph


def avg_of(b: dict) -> float:
    """A benchmark summary's Avg@k at its own k."""
    return b[f"avg@{b['k']}"]


def pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def num(value: Optional[float], digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Table):
            out.append("| " + " | ".join(b.headers) + " |")
            out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(b.headers))) + "|")
            out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.alt}]({b.path})", ""]
        else:
            out += [b, ""]
    return "\n".join(out)


def to_html(blocks: list[Block], title: str, root: Path) -> str:
    """Self-contained HTML: images are embedded, so the file can be mailed or logged alone."""
    parts = [
        "<!doctype html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%}</style>",
        "</head><body>",
    ]
    for b in blocks:
        if isinstance(b, Table):
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b.headers) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in b.rows]
            parts.append("</table>")
        elif isinstance(b, Image):
            data = base64.b64encode((root / b.path).read_bytes()).decode()
            parts.append(f"<p><img alt='{html.escape(b.alt)}' src='data:image/png;base64,{data}'></p>")
        elif b.startswith("#"):
            level = len(b) - len(b.lstrip("#"))
            parts.append(f"<h{level}>{html.escape(b.lstrip('#').strip())}</h{level}>")
        else:
            parts.append(f"<p>{html.escape(b)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def _write_documents(blocks: list[Block], title: str, root: Path, stem: str) -> list[Path]:
    md, page = root / f"{stem}.md", root / f"{stem}.html"
    write_atomic(md, to_markdown(blocks))
    write_atomic(page, to_html(blocks, title, root))
    return [md, page]


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------


def _grid(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _curve_axes(ax, title: str, k: int) -> None:
    ax.set_title(title, fontsize=10)
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlim(1, max(2, k))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("k")
    ax.set_ylabel("Pass@k")
    ax.grid(alpha=0.3)


def plot_pass_at_k(summary: dict, path: Path) -> None:
    """One panel per benchmark: the unbiased Pass@k curve for k = 1..n (Pass@1 = Avg@k)."""
    benches = list(summary["benchmarks"].values())
    fig, axes = _grid(len(benches))
    for ax, b in zip(axes, benches):
        curve = b["pass@k_curve"]
        ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3)
        _curve_axes(ax, f"{b['benchmark']} (Avg@{b['k']} {pct(avg_of(b))}%)", b["k"])
    fig.suptitle(f"Pass@k: {summary['label']}", fontsize=11)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_comparison(runs: list[tuple[str, dict]], benchmarks: list[str], path: Path) -> None:
    """One panel per benchmark, one Pass@k curve per run."""
    fig, axes = _grid(len(benchmarks))
    for ax, name in zip(axes, benchmarks):
        k = 1
        for label, summary in runs:
            b = summary["benchmarks"].get(name)
            if b is None:
                continue
            curve = b["pass@k_curve"]
            k = max(k, len(curve))
            ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=f"{label} ({pct(avg_of(b))})")
        _curve_axes(ax, f"{name}: Pass@k (legend: Avg@k %)", k)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    _save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------


def summary_table(summary: dict) -> Table:
    dist_keys = sorted({key for b in summary["benchmarks"].values() for key in b if key.startswith("dist-")})
    headers = ["benchmark", "k", "problems", "Avg@k (95% CI)", "Pass@1", "Pass@k", "maj@k", *dist_keys,
               "distinct correct", "mean tokens", "truncated %", "answered %"]
    rows = []
    for b in summary["benchmarks"].values():
        k = b["k"]
        lo, hi = b[f"avg@{k}_ci95"]
        rows.append([
            b["benchmark"], str(k), str(b["problems"]), f"{pct(b[f'avg@{k}'])} [{pct(lo)}, {pct(hi)}]",
            pct(b["pass@1"]), pct(b[f"pass@{k}"]), pct(b[f"maj@{k}"]), *(num(b.get(d)) for d in dist_keys),
            num(b["distinct_correct"], 2), num(b["response_tokens"]["mean"], 1), pct(b["truncated_rate"]), pct(b["answer_rate"]),
        ])
    for group, agg in summary["aggregate"].items():
        if group == "all" or len(summary["aggregate"]) > 2:
            rows.append([
                f"mean ({group}, {len(agg['benchmarks'])})", "", "", pct(agg["avg@k"]), pct(agg["pass@1"]), pct(agg["pass@k"]),
                pct(agg["maj@k"]), *(num(agg.get(d)) for d in dist_keys), num(agg["distinct_correct"], 2),
                num(agg["response_tokens_mean"], 1), "", "",
            ])
    return Table(headers, rows)


def write_report(summary: dict, root: Path) -> list[Path]:
    """report.md, report.html and plots/pass_at_k.png for one run's summary; returns the paths."""
    plot = Path(PLOTS) / "pass_at_k.png"
    plot_pass_at_k(summary, root / plot)
    blocks: list[Block] = [
        f"# Evaluation: {summary['label']}",
        f"Model: {summary['model']} (engine {summary['engine']}). Metrics in percent; Avg@k is the mean correctness "
        "over the k samples of a problem, then over problems, with a bootstrap 95% CI over problems; Pass@k is the "
        "unbiased estimator 1 - C(n-c,k)/C(n,k); maj@k votes over answers grouped by the scorer's equivalence; "
        "dist-n counts distinct n-grams over a problem's k responses; distinct correct counts distinct correct answers "
        "(math) or programs (code) per problem.",
        "## Results",
        summary_table(summary),
        "## Pass@k curves",
        Image(plot.as_posix(), "Pass@k curves per benchmark"),
        "## Verdicts",
        Table(["benchmark", "verdict reasons (samples)"],
              [[b["benchmark"], ", ".join(f"{r}: {n}" for r, n in b["reasons"].items())] for b in summary["benchmarks"].values()]),
        "## Settings",
        Table(["benchmark", "k", "temperature", "top_p", "max new tokens", "source"],
              [[name, str(s["k"]), str(s["sampling"]["temperature"]), str(s["sampling"]["top_p"]),
                str(s["sampling"]["max_new_tokens"]), json.dumps(s["source"])] for name, s in summary["settings"].items()]),
    ]
    return [root / plot, *_write_documents(blocks, f"Evaluation: {summary['label']}", root, "report")]


# --------------------------------------------------------------------------------------------
# several runs
# --------------------------------------------------------------------------------------------


def comparison(runs: list[tuple[str, dict]]) -> dict:
    """Side-by-side numbers: per benchmark and per run, Avg@k with its CI, Pass@k, maj@k, distinct
    correct answers and dist-3/dist-4."""
    benchmarks: list[str] = []
    for _, s in runs:
        benchmarks += [b for b in s["benchmarks"] if b not in benchmarks]
    table = {}
    for name in benchmarks:
        table[name] = {}
        for label, s in runs:
            b = s["benchmarks"].get(name)
            if b is not None:
                k = b["k"]
                table[name][label] = {"k": k, "avg@k": b[f"avg@{k}"], "pass@k": b[f"pass@{k}"], "maj@k": b[f"maj@{k}"],
                                      "dist-3": b.get("dist-3"), "dist-4": b.get("dist-4"), "avg@k_ci95": b[f"avg@{k}_ci95"],
                                      "distinct_correct": b["distinct_correct"]}
    means = {label: s["aggregate"]["all"] for label, s in runs}
    return {"runs": [label for label, _ in runs], "benchmarks": table, "mean": means}


def write_comparison(runs: list[tuple[str, dict]], root: Path) -> list[Path]:
    """compare.md, compare.html, compare.json and plots/compare.png for several runs' summaries."""
    labels = [label for label, _ in runs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"run labels must be distinct, got {labels}")
    data = comparison(runs)
    benchmarks = list(data["benchmarks"])
    headers = ["benchmark", "k"] + [f"{label} Avg@k (95% CI)" for label in labels] + [f"{label} Pass@k" for label in labels]
    rows = []

    def with_ci(v: dict) -> str:
        lo, hi = v["avg@k_ci95"]
        return f"{pct(v['avg@k'])} [{pct(lo)}, {pct(hi)}]"

    for name, per_run in data["benchmarks"].items():
        ks = sorted({v["k"] for v in per_run.values()})
        cells = [name, "/".join(map(str, ks))]
        cells += [with_ci(per_run[l]) if l in per_run else "–" for l in labels]
        cells += [pct(per_run[l]["pass@k"]) if l in per_run else "–" for l in labels]
        rows.append(cells)
    rows.append(["mean", ""] + [pct(data["mean"][l]["avg@k"]) for l in labels] + [pct(data["mean"][l]["pass@k"]) for l in labels])
    def cell(per_run: dict, label: str, key: str) -> str:
        if label not in per_run:
            return "–"
        return pct(per_run[label][key]) if key == "maj@k" else num(per_run[label][key], 2 if key == "distinct_correct" else 3)

    keys = ("maj@k", "distinct_correct", "dist-3", "dist-4")
    diversity = Table(
        ["benchmark"] + [f"{label} {key.replace('_', ' ')}" for key in keys for label in labels],
        [[name] + [cell(per_run, label, key) for key in keys for label in labels] for name, per_run in data["benchmarks"].items()],
    )
    plot = Path(PLOTS) / "compare.png"
    plot_comparison(runs, benchmarks, root / plot)
    write_atomic(root / "compare.json", json.dumps(data, indent=2))
    blocks: list[Block] = [
        f"# Comparison: {' vs '.join(labels)}",
        "Avg@k and the unbiased Pass@k in percent, each benchmark at its own k; mean: unweighted over benchmarks.",
        Table(headers, rows),
        Image(plot.as_posix(), "Pass@k curves per benchmark, one line per run"),
        "## Majority vote and diversity",
        "Distinct correct: distinct correct answers (math) or programs (code) per problem; dist-n: distinct n-grams "
        "over a problem's k responses.",
        diversity,
        "## Runs",
        Table(["label", "model"], [[label, s["model"]] for label, s in runs]),
    ]
    return [root / "compare.json", root / plot, *_write_documents(blocks, f"Comparison: {' vs '.join(labels)}", root, "compare")]
