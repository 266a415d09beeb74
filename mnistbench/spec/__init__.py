"""Stage 1, the spec: bounded YAML, validation, the matrix of cells, and the selection (``--shard``, ``--cell``).

Imports no torch: a spec can be read, checked and listed on a machine without PyTorch.
"""
