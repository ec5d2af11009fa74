"""Short Markdown summaries that the Kubeflow UI shows for the data prep and register steps."""

from __future__ import annotations


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
