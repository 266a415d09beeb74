"""Stage 4, a run: the runner, one cell, checkpoints, locks, preflight, progress, and the executors (sequential, Ray)."""
