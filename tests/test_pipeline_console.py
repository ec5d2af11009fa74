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
