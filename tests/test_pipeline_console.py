"""The local run's console: KFP's task lines become one line per stage with its wall time and key
figure, progress lines drive a bar only on a terminal, everything lands in the log file, and a
failed stage names its error and the log."""

from __future__ import annotations

import io

from lad.pipeline.console import FIGURE_MARK, PROGRESS_MARK, StageConsole, captured

KFP_LINES = [
    "15:00:00.000 - INFO - Executing task \x1b[96m'sft-warmup'\x1b[0m",
    "15:00:00.001 - INFO - Streamed logs:",
    "    sft:  10%|#         | 1/10",
    f"    {PROGRESS_MARK} 1/10",
    f"    {FIGURE_MARK} loss 0.334",
    "15:00:01.000 - INFO - Task \x1b[96m'sft-warmup'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    "15:00:01.001 - INFO - Executing task \x1b[96m'register-model'\x1b[0m",
    "    Traceback (most recent call last):",
    "    lad.pipeline.steps.StepError: parameter promotion_metric 'x': not among the evaluation's metrics",
    "15:00:02.000 - ERROR - Task \x1b[96m'register-model'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m",
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stage_lines_figures_and_errors(tmp_path):
    out = io.StringIO()
    console = StageConsole(tmp_path / "training.log", out, names={"sft-warmup": "SFT warm-up"})
    with captured(console):
        print("\n".join(KFP_LINES[:4]))
        print("\n".join(KFP_LINES[4:]), end="")
        print()
    lines = out.getvalue().splitlines()
    assert lines[0] == "▶ SFT warm-up" and lines[2] == "▶ register-model"
    assert lines[1].startswith("✓ SFT warm-up  ") and lines[1].endswith(" s  loss 0.334")
    assert lines[3].startswith("✗ register-model failed after ") and lines[3].endswith(
        " s: parameter promotion_metric 'x': not among the evaluation's metrics; log: " + str(tmp_path / "training.log"))
    assert len(lines) == 4  # no progress bar off a terminal, no KFP line
    assert (tmp_path / "training.log").read_text() == "\n".join(KFP_LINES) + "\n"
    assert console.stages["SFT warm-up"]["status"] == "SUCCESS" and console.stages["SFT warm-up"]["figure"] == "loss 0.334"
    assert console.stages["register-model"]["status"] == "FAILURE"
    assert console.stages["register-model"]["error"] == "parameter promotion_metric 'x': not among the evaluation's metrics"


def test_progress_drives_a_bar_on_a_terminal_and_verbose_shows_everything(tmp_path):
    term = Terminal()
    console = StageConsole(tmp_path / "a.log", term)
    for line in KFP_LINES[:4] + KFP_LINES[5:6]:
        console.write(line + "\n")
    console.close()
    assert "1/10" in term.getvalue() and "sft-warmup" in term.getvalue()
    loud = io.StringIO()
    console = StageConsole(tmp_path / "b.log", loud, verbose=True)
    console.write("\n".join(KFP_LINES) + "\n")
    console.close()
    assert all(line in loud.getvalue() for line in KFP_LINES)


def test_the_closing_table_puts_the_models_side_by_side_with_their_gain():
    from lad.pipeline.local import results_table

    def run(avg, ci, pass_k, distinct, dist3):
        return {"k": 8, "avg@k": avg, "avg@k_ci95": ci, "pass@k": pass_k, "maj@k": 0.0, "distinct_correct": distinct,
                "dist-3": dist3, "dist-4": None}

    compared = {"runs": ["warm start", "lad", "grpo"], "benchmarks": {
        "synthetic_countdown": {"warm start": run(0.0137, [0.009, 0.019], 0.082, 0.1, 0.4123),
                                "lad": run(0.0947, [0.078, 0.112], 0.351, 0.4, None),
                                "grpo": run(0.12, [0.1, 0.14], 0.3, 0.25, 0.25)},
        "humaneval": {"lad": run(0.5, [0.25, 0.75], 1.0, 2.0, 0.5)}}}
    assert results_table(compared) == [
        "synthetic_countdown, k = 8          Avg@k [95% CI]    gain   Pass@k  distinct correct  dist-3",
        "  warm start                     1.37 [0.90, 1.90]             8.20              0.10   0.412",
        "  lad                           9.47 [7.80, 11.20]   +8.10    35.10              0.40       –",
        "  grpo                        12.00 [10.00, 14.00]  +10.63    30.00              0.25   0.250",
        "humaneval, k = 8                    Avg@k [95% CI]    gain   Pass@k  distinct correct  dist-3",
        "  lad                         50.00 [25.00, 75.00]           100.00              2.00   0.500",
    ]
