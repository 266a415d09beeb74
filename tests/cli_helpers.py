"""Assertions shared by the CLI tests."""


def assert_one_line_error(result, words: str):
    """Bad input: exit 2, no traceback, one line starting ``mnistbench: error:`` that contains ``words``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mnistbench: error: "), result.output
    assert words in lines[0], lines[0]


def resume_hint(*args) -> str:
    """The resume hint of ``mnistbench run ARGS``, from the command line as typer parses it."""
    import typer

    from mnistbench.cli import app, resume_command

    run = typer.main.get_command(app).commands["run"]
    return resume_command(run.make_context("run", [str(a) for a in args]))
