"""Stage 3, training: the engine (one plain loop), the step profile, the machine's measured peaks, memory."""
