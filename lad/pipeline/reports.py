"""Short Markdown summaries: what the Kubeflow UI shows for the data prep and register steps, and
what MLflow shows on a registered version's page and its pipeline run."""

from __future__ import annotations

from typing import Optional


def prep_markdown(result: dict) -> str:
    """The data prep report (lad.data.prep's report dict) as a Markdown table."""
    columns = ("read", "kept", "rejected", "duplicate", "contaminated")
    lines = ["# Data prep", "", "| source | role | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for name, s in result["sources"].items():
        lines.append(f"| {name} | {s['role']} | " + " | ".join(str(s[c]) for c in columns) + " |")
    lines.append("| **total** | | " + " | ".join(str(result["totals"][c]) for c in columns) + " |")
    lines += ["", "Outputs: " + ", ".join(f"{name} ({rows} rows)" for name, rows in result["outputs"].items())]
    if result["errors_total"]:
        lines.append(f"\n{result['errors_total']} bad row(s) quarantined; first: {result['errors'][0]['message']}")
    return "\n".join(lines) + "\n"


def decision_markdown(result: dict) -> str:
    """The registration and promotion decision of the register step."""
    verdict = "promoted to champion" if result["promoted"] else "not promoted"
    champion = f"v{result['champion']}" if result["champion"] else "none"
    return (
        f"# {result['name']} v{result['version']}: {verdict}\n\n"
        f"- {result['metric']}: {result['value']:.6g}\n"
        f"- gate: {result['reason']}\n"
        f"- champion now: {champion}\n"
        f"- model: `{result['model_uri']}` (tracking URI `{result['tracking_uri']}`)\n"
    )


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def scores_markdown(summary: dict, label: str, baseline: Optional[tuple[str, dict]] = None) -> str:
    """A table of the model's scores per benchmark in percent (Avg@k with its 95% CI, Pass@k),
    beside ``baseline`` (label, summary: the warm start or the champion, evaluated the same way)
    with the gain in points."""
    other, base = baseline if baseline else ("", {"benchmarks": {}})
    columns = ["benchmark"]
    if baseline:
        columns += [f"{other} Avg@k [95% CI]", f"{label} Avg@k [95% CI]", "gain (points)", f"{other} Pass@k", f"{label} Pass@k"]
    else:
        columns += [f"{label} Avg@k [95% CI]", f"{label} Pass@k"]
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]

    def avg(b: dict) -> str:
        k = b["k"]
        lo, hi = b[f"avg@{k}_ci95"]
        return f"{_pct(b[f'avg@{k}'])} [{100 * lo:.2f}, {100 * hi:.2f}]"

    for name, b in summary["benchmarks"].items():
        k, theirs = b["k"], base["benchmarks"].get(name)
        cells = [f"{name} (k = {k}, {b['problems']} problem{'' if b['problems'] == 1 else 's'})"]
        if baseline and theirs is not None and theirs["k"] == k:
            cells += [avg(theirs), avg(b), f"{100 * (b[f'avg@{k}'] - theirs[f'avg@{k}']):+.2f}", _pct(theirs[f"pass@{k}"]),
                      _pct(b[f"pass@{k}"])]
        elif baseline:
            cells += ["–", avg(b), "–", "–", _pct(b[f"pass@{k}"])]
        else:
            cells += [avg(b), _pct(b[f"pass@{k}"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _accuracy(metric: str) -> bool:
    return metric.replace("@", "_").endswith(("avg_k", "pass_k", "pass_1", "maj_k"))


def _shown(metric: str, value: float) -> str:
    """A registry metric as the reports show it: percent for the accuracy metrics, else as it is."""
    return _pct(value) if _accuracy(metric) else f"{value:.4g}"


def model_markdown(result: dict, summary: dict, *, baseline: Optional[tuple[str, dict]], compared: Optional[tuple[str, float]],
                   margin: float, min_score: float, base_model: str, data_hash: Optional[str], links: list[tuple[str, str]]) -> str:
    """What a registered version is, for its page in the registry and its pipeline run's description:
    its scores beside its baseline's (:func:`scores_markdown`), the gate's decision on the promotion
    metric in percent with the gate's own reason, the base model, the data and ``links``.
    ``compared``: (what the gate compared with, e.g. "champion v1", that one's metric value)."""
    name, version, metric = result["name"], result["version"], result["metric"]
    verdict = "promoted to champion" if result["promoted"] else "not promoted"
    gate = f"{metric} {_shown(metric, result['value'])}"
    if compared is not None:
        gate += f" vs {compared[0]} {_shown(metric, compared[1])}"
    lines = [
        f"**{name} v{version}**: {verdict}.", "",
        scores_markdown(summary, f"v{version}", baseline), "",
        f"**Promotion gate** ({metric}, margin {f'{100 * margin:.2f} points' if _accuracy(metric) else f'{margin:g}'}, "
        f"floor {_shown(metric, min_score)}): "
        f"**{'promoted' if result['promoted'] else 'refused'}**: {gate}. Gate's reason: `{result['reason']}`", "",
        f"- base model: `{base_model or 'not recorded'}`",
        f"- data: {f'data prep output, sha256 `{data_hash[:16]}`' if data_hash else 'not recorded'}",
    ]
    lines += [f"- [{text}]({url})" for text, url in links]
    return "\n".join(lines) + "\n"
