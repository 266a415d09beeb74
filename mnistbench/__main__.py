"""``python -m mnistbench``: the same command line as the ``mnistbench`` script."""

from .cli import app

app(prog_name="mnistbench")
