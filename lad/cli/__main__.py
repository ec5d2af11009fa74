"""``python -m lad.cli ...``: the ``lad`` command."""

from lad.cli import app

app(prog_name="lad")
