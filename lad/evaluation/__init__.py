"""Evaluation: metrics (pure functions) and, on top of them, the evaluation stage."""
