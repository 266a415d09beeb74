"""The two exceptions the CLI turns into exit codes: ``MnistbenchError`` (one line, exit 2) and ``Interrupted`` (130/143)."""


class MnistbenchError(Exception):
    """A user-facing error: bad spec, bad data, unavailable device, unwritable folder.

    The message is a single line that names the problem; the CLI prints it
    without a traceback and exits with 2.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class Interrupted(Exception):
    """Raised inside a run when SIGINT/SIGTERM asked it to stop; carries the exit code (130/143)."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum
