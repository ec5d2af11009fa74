"""``python -m lad.sandbox serve ...``: the service alone, without the rest of the lad command
line (the sandbox image installs only the service's dependencies)."""

from lad.cli.sandbox import app

app(prog_name="lad sandbox")
