"""``python -m lad.sandbox serve ...``: the service alone, without the rest of the lad command
line (the sandbox image installs only the service's dependencies)."""

from lad.sandbox.cli import sandbox_app

sandbox_app(prog_name="lad sandbox")
