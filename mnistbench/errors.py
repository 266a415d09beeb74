"""The exceptions the CLI turns into exit codes: ``MnistbenchError`` (one line, exit 2), ``ClusterLost`` (one line and
the resume command, exit 3) and ``Interrupted`` (130/143)."""


class MnistbenchError(Exception):
    """A user-facing error: bad spec, bad data, unavailable device, unwritable folder.

    The message is a single line that names the problem; the CLI prints it
    without a traceback and exits with 2.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))

    @property
    def lines(self) -> list[str]:
        """The problems, one a line (the CLI prints each after ``mnistbench: error:``)."""
        return [str(self)]


class SpecErrors(MnistbenchError):
    """Every problem found in one spec, so that one pass of ``validate`` names them all; ``str`` is the first."""

    def __init__(self, problems: list[str]):
        self.problems = [" ".join(p.split()) for p in problems]
        more = len(self.problems) - 1
        super().__init__(self.problems[0] + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""))

    @property
    def lines(self) -> list[str]:
        return list(self.problems)


class ClusterLost(MnistbenchError):
    """The cluster a run used is gone (e.g. Ray's head): the cells that finished are saved and a rerun resumes (exit 3)."""


class Interrupted(Exception):
    """Raised inside a run when SIGINT/SIGTERM asked it to stop; carries the exit code (130/143)."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def reason(e: BaseException, limit: int = 200) -> str:
    """What an exception says, in one line: its type and its message (whitespace collapsed, cut to ``limit``)."""
    text = " ".join(str(e).split())[:limit]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


QUOTE_LIMIT = 100  # characters of an offending value an error message quotes


def brief(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters (with an ellipsis), in time bounded whatever the value's size."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = shortener.maxlong = limit + 2
    shortener.maxlevel, shortener.maxlist, shortener.maxtuple, shortener.maxdict = 3, 8, 8, 6
    shortener.maxset = shortener.maxfrozenset = 8
    try:
        text = shortener.repr(value)
    except ValueError:  # an integer too long to print (Python's 4,300-digit limit)
        text = f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"
