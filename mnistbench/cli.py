"""The ``mnistbench`` command: a thin layer over functions the tests call directly.

Exit codes (README, "Exit codes"): 0 success; 1 ``report --check`` found stale tables, or
``compare --fail-on`` found a regression; 2 bad input (spec, data, device, folder, a full
disk, a malformed ``--fail-on``); 3 the run finished but some cells failed, or its Ray cluster was lost; 4
``compare --fail-on`` refused to judge throughput measured under load (and found no regression); 130/143 stopped
by SIGINT/SIGTERM after saving what was finished.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from .errors import ClusterLost, Interrupted, MnistbenchError, SpecErrors
from .report.words import counted

EXIT_STALE, EXIT_BAD_INPUT, EXIT_CELLS_FAILED = 1, 2, 3
EXIT_REGRESSION = 1  # `compare --fail-on` found a regression: like a stale report, "the check found a problem"
EXIT_NOT_JUDGED = 4  # `compare --fail-on` would not judge throughput measured under load: neither pass nor regression


def _flags_without_type() -> None:
    """typer's rich help labels every on/off flag ``<bool>`` (``--version <bool>``), as if it took a value: no label."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is not None:
        TyperOption.display_type_rich = lambda self, ctx: None if getattr(self, "is_flag", False) else shown(self, ctx)


_flags_without_type()

class _OneLineUsageErrors(TyperGroup):
    """A bad option value or an unknown option is bad input like any other: one line, exit 2 (not click's box)."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except typer.TyperException as e:  # click's usage errors (typer carries its own click)
            fail(e.format_message().replace("Value error, ", ""))


app = typer.Typer(
    cls=_OneLineUsageErrors,
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark LeNet-5 and comparable MLPs on MNIST: accuracy, loss, parameters, speed.",
)

DataDir = typer.Option(None, "--data-dir", help="Folder with the four IDX files (else $MNISTBENCH_DATA_DIR, else the user cache).")
RunDataDirs = typer.Option(
    None, "--data-dir", metavar="[DATASET=]FOLDER",
    help="A dataset's folder of IDX files, e.g. fashion-mnist=/data/fm (repeatable). A bare FOLDER is allowed when "
    "the spec uses one dataset. Else $MNISTBENCH_DATA_DIR / $MNISTBENCH_FASHION_DATA_DIR, else the user cache.",
)


def fail(message: str | MnistbenchError, code: int = EXIT_BAD_INPUT) -> None:
    for line in message.lines if isinstance(message, MnistbenchError) else [message]:  # a spec: each problem a line
        typer.echo(f"mnistbench: error: {line}", err=True)
    raise typer.Exit(code)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__
        from .environment import git_commit

        typer.echo(f"mnistbench {__version__} (commit {git_commit() or 'unknown'})")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and git commit, then exit."),
) -> None:
    # Options that apply before any command; the app's help text stays the one given to typer.Typer.
    pass


JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables.")


class ExecutorKind(str, Enum):
    """Where the cells of a run are executed (``engine`` names only the training loop)."""

    sequential = "sequential"
    ray = "ray"


@app.command()
def models(
    detail: bool = typer.Option(False, "--detail", help="Per-layer weights and biases of each model."),
    refs: Optional[List[str]] = typer.Option(
        None, "--model", metavar="REF",
        help="Also show a model given by reference: my_pkg.nets:SmallCNN, or ./nets.py:build relative to the working "
        "folder (repeatable; docs/models.md)."),
    as_json: bool = JsonOption,
) -> None:
    """List the models (built-in, installed by entry point, and any --model): parameters, forward FLOPs per sample."""
    from .models.describe import describe_models

    try:
        info = describe_models(detail, list(refs or []), Path.cwd())
    except MnistbenchError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    from tabulate import tabulate

    for m in info["models"] if detail else []:
        table = [[l["layer"], l["kind"], f"{l['weights']:,}", f"{l['biases']:,}", f"{l['parameters']:,}"] for l in m["layers"]]
        table.append(["total", "", f"{sum(l['weights'] for l in m['layers']):,}", f"{sum(l['biases'] for l in m['layers']):,}",
                      f"{m['parameters']:,}"])
        typer.echo(f"\n{m['name']}\n" + tabulate(table, headers=["layer", "kind", "weights", "biases", "parameters"],
                                                 tablefmt="github", disable_numparse=True))
    if detail:
        typer.echo("")
    rows = [[m["name"], f"{m['parameters']:,}", f"{m['forward_flops']:,}", m["description"]] for m in info["models"]]
    typer.echo(tabulate(rows, headers=["model", "parameters", "forward FLOPs/sample", "description"],
                        tablefmt="github", disable_numparse=True))


@app.command()
def validate(specs: List[Path] = typer.Argument(..., help="Spec files to check."), as_json: bool = JsonOption) -> None:
    """Check spec files without training; print how many cells each expands to. Referenced models are imported and checked."""
    from .models.factory import parse_model_ref
    from .spec.schema import load_spec

    loaded, problems = [], []
    for path in specs:  # every spec is checked, and every problem of each is named, in one pass
        try:
            spec = load_spec(path)
            configs = [c.config for c in spec.cells()]
            external = [c for c in configs if not parse_model_ref(c.model).builtin]
            if external:
                from .run.preflight import check_models  # imports torch: only for specs that bring their own models

                check_models(external, spec.cell_timeout)
        except MnistbenchError as e:
            problems += e.lines
            continue
        loaded.append((path, spec))
        checked = f", models checked: {', '.join(dict.fromkeys(c.model for c in external))}" if external else ""
        if not as_json:
            typer.echo(f"{path}: ok, spec '{spec.name}', {counted(len(configs), 'cell')}{checked}")
    if problems:
        fail(SpecErrors(problems))
    if as_json:  # every spec is checked before anything is printed: a bad one leaves stdout empty
        from .spec.schema import describe_spec

        typer.echo(json.dumps({"specs": [describe_spec(path, spec) for path, spec in loaded]}, indent=2))


@app.command()
def run(
    ctx: typer.Context,
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="A benchmark spec (YAML)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the expanded cells (those selected) and exit."),
    results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Root folder; results go to <root>/<spec name>/."),
    data_dir: Optional[List[str]] = RunDataDirs,
    force: bool = typer.Option(False, "--force", help="Re-run cells that already finished with the same configuration."),
    no_download: bool = typer.Option(False, "--no-download", help="Never try to download missing data files."),
    executor: ExecutorKind = typer.Option(ExecutorKind.sequential, "--executor", help="Where cells run: one after "
                                          "another here, or one Ray task per cell (pip install 'mnistbench\\[ray]')."),
    engine: Optional[ExecutorKind] = typer.Option(None, "--engine", hidden=True, help="The old name of --executor."),
    address: Optional[str] = typer.Option(None, "--address", metavar="ADDR",
                                          help="With --executor ray: an existing cluster ('auto', host:port, ray://...); else a local one."),
    max_retries: int = typer.Option(3, "--max-retries", metavar="N", min=0, max=100,
                                    help="With --executor ray: re-runs of a cell whose worker or node is lost."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="I/N", help="Run only shard I of N (every N-th cell), e.g. from a Slurm array."),
    cell: Optional[List[str]] = typer.Option(None, "--cell", metavar="ID", help="Run only this cell (repeatable); ids as --dry-run lists them."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary (or, with --dry-run, the cells) as one "
                                 "JSON document on stdout; progress goes to stderr."),
    reference: Optional[Path] = typer.Option(
        None, "--reference", metavar="DIR",
        help="Compare with these results at the end (default: reference/<spec name> in the working folder or the "
        "spec's checkout, when there is one, or a reference/<spec name>-* beside it measured on this kind of machine)."),
    no_reference: bool = typer.Option(False, "--no-reference", help="Do not compare with a reference."),
) -> None:
    """Train and evaluate every cell of a spec, then write run files, tables and plots, and compare them with the
    reference results of the spec (vs_reference.md)."""
    from .report.reference import chosen_reference
    from .spec.selection import Selection
    from .spec.schema import load_spec

    try:
        spec = load_spec(spec_path)
        dirs = parse_data_dirs(data_dir or [])
        selection = Selection.parse(shard, cell or [])
        executor = chosen_executor(ctx, executor, engine, address)
        ref = chosen_reference(spec.name, spec_path, reference, no_reference)
        if dry_run:
            _print_cells(spec, selection, as_json)
            return
        from contextlib import nullcontext, redirect_stdout

        from .run import isolation

        if isolation.needed(spec):  # it imports torch while this process does
            isolation.start_fork_server()
        from .run.progress import progress_for
        from .run.runner import run_spec

        where = _executor(executor, address, max_retries)
        # With --json, stdout carries the document only: progress and any other message go to stderr.
        quiet = redirect_stdout(sys.stderr) if as_json else nullcontext()
        compared: list = []  # written before the report is built, so the page and its manifest include it
        compare = None if ref is None else lambda folder: compared.append(_vs_reference(folder, ref, reference is None))
        with quiet, progress_for(sys.stderr if as_json else None) as progress:
            summary = run_spec(spec, results_dir, dirs, force, progress, allow_download=not no_download,
                               executor=where, selection=selection, before_report=compare)
    except (MnistbenchError, Interrupted) as e:
        _stopped(e, resume_command(ctx))
    _print_run_summary(summary, as_json, _show_vs_reference(compared[-1] if compared else None, as_json))


def _stopped(e: MnistbenchError | Interrupted, hint: str) -> None:
    """A run that did not end: bad input is one line (exit 2); a signal or a lost Ray cluster says how to resume."""
    if not isinstance(e, (ClusterLost, Interrupted)):
        fail(e)
    if isinstance(e, ClusterLost):  # the tables were rebuilt from the cells that finished
        typer.echo(f"mnistbench: error: {e}; finished cells and epochs are saved. Resume with: {hint}", err=True)
        _exit_without_ray(EXIT_CELLS_FAILED)
    typer.echo(f"mnistbench: stopped by {e}; finished cells and epochs are saved. Resume with: {hint}", err=True)
    raise typer.Exit(e.exit_code)


def _vs_reference(results_dir: Path, ref: Path, default: bool):
    """Compare the run with its reference (``default``: the one found, or the one beside it measured on this kind of
    machine) and write vs_reference.md/json; the comparison, or None (a reference that cannot be read is a warning:
    the run itself is saved)."""
    if Path(ref).resolve() == Path(results_dir).resolve():
        return None
    from .report.reference import compare_with_reference, matching_reference, write_vs_reference

    if default:
        ref = matching_reference(ref, results_dir)
    try:
        vs = compare_with_reference(results_dir, ref)
        write_vs_reference(vs)
    except MnistbenchError as e:
        typer.echo(f"mnistbench: warning: no comparison with the reference {ref}: {e}", err=True)
        return None
    return vs


def _show_vs_reference(vs, as_json: bool) -> Optional[dict]:
    """Print the comparison's short table (to stderr with --json); its JSON."""
    if vs is None:
        return None
    from .report.reference import summary_text, vs_reference_json

    typer.echo("\n" + summary_text(vs) + "\n", err=as_json)
    return vs_reference_json(vs)


def _print_run_summary(summary, as_json: bool, vs: Optional[dict] = None) -> None:
    """The run's last words: counts and times (or one JSON document); exit 3 when cells failed."""
    failed = summary.cells("failed")
    if as_json:
        from .run.runner import describe_run

        typer.echo(json.dumps({**describe_run(summary), "vs_reference": vs}, indent=2))
    else:
        typer.echo(
            f"{counted(len(summary.ran), 'cell')} run ({len(summary.cells('finished'))} finished, "
            f"{len(summary.cells('diverged'))} diverged, {len(failed)} failed), {len(summary.skipped)} skipped (already done); "
            f"wall clock {command_seconds():.1f}s since the command started, timed training+evaluation "
            f"{summary.measured_seconds:.1f}s. Results: {summary.results_dir}"
        )
    if failed:
        typer.echo(f"mnistbench: error: {counted(len(failed), 'cell')} failed ({', '.join(failed)}); their reasons are in the run "
                   "files and summary.md, and the next run retries them", err=True)
        raise typer.Exit(EXIT_CELLS_FAILED)


def command_seconds() -> float:
    """Wall-clock seconds since this process started, imports included: what `time` would print for the command."""
    import time

    import psutil

    return time.time() - psutil.Process().create_time()


def _exit_without_ray(code: int) -> None:
    """End the process now: Ray's teardown in this process would wait on the lost cluster, or crash."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def chosen_executor(ctx: typer.Context, executor: ExecutorKind, engine: Optional[ExecutorKind],
                    address: Optional[str]) -> ExecutorKind:
    """--executor, or its deprecated old name --engine (with a one-line warning); --address goes with ray only."""
    if engine is not None:
        if given(ctx, "executor"):
            raise MnistbenchError("--engine is the old name of --executor: give --executor only")
        typer.echo("mnistbench: warning: --engine is deprecated: use --executor (the engine is the training loop)", err=True)
        executor = engine
    if executor is not ExecutorKind.ray and address is not None:
        raise MnistbenchError("--address is for --executor ray")
    return executor


def _executor(kind: ExecutorKind, address: Optional[str], max_retries: int):
    if kind is ExecutorKind.sequential:
        return None
    from .run.ray import RayExecutor

    return RayExecutor(address, max_retries)


def parse_data_dirs(values: list[str]) -> dict[Optional[str], str]:
    """``--data-dir`` values as {dataset: folder}; a bare folder is stored under None."""
    out: dict[Optional[str], str] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or "/" in name or not name:
            name, folder = None, value  # a bare folder (which may itself contain '=' after a '/')
        if name in out:
            raise MnistbenchError(f"--data-dir given twice for {name or 'the same dataset'}")
        out[name] = folder
    return out


# Options the resume hint leaves out: --force would run finished cells again; --dry-run never starts a run.
_NOT_RESUMED = ("force", "dry_run")
_RENAMED = {"engine": "--executor"}  # a deprecated option is repeated under its new name


def given(ctx: typer.Context, name: str) -> bool:
    """Whether parameter ``name`` was given (on the command line or in the environment), not left at its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def resume_command(ctx: typer.Context) -> str:
    """The command that continues this run, as it can be typed where it is printed: every option it was given except
    those in ``_NOT_RESUMED``, read from the parsed command line (a new option needs no change here), and always
    --results-dir. Under `make bench-cpu` (the Makefile sets $MNISTBENCH_INVOKED_AS) the make command with the options
    in ARGS (scripts/bench.sh adds the spec)."""
    invoked = os.environ.get("MNISTBENCH_INVOKED_AS")
    args = [] if invoked else [program(), ctx.info_name or "run"]
    for param in ctx.command.params:
        argument = param.param_type_name == "argument"
        if param.name in _NOT_RESUMED or argument and invoked:
            continue
        if given(ctx, param.name) or argument or (param.name == "results_dir" and not invoked):
            args += _as_typed(param, ctx.params[param.name])
    if invoked:  # e.g. "make bench-cpu SPEC=bench/cpu.yaml"
        return invoked + (f" ARGS={shlex.quote(shlex.join(args))}" if args else "")
    return shlex.join(args)


def _as_typed(param, value) -> list[str]:
    """A parsed parameter (a click ``Parameter``) as it is typed on the command line."""
    if param.param_type_name == "argument":
        return [str(value)]
    name = _RENAMED.get(param.name, max(param.opts, key=len))
    if getattr(param, "is_flag", False):
        return [name] if value else []
    values = value if getattr(param, "multiple", False) else [value]
    return [part for v in values for part in (name, str(v.value if isinstance(v, Enum) else v))]


def program() -> str:
    """``mnistbench`` when that name on PATH is this program, else the path it was started by (``.venv/bin/mnistbench``)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name != "mnistbench":
        return "mnistbench"  # python -m, or a test runner
    found = shutil.which("mnistbench")
    return "mnistbench" if found and Path(found).resolve() == Path(argv0).resolve() else argv0


def _print_cells(spec, selection, as_json: bool = False) -> None:
    if as_json:
        from .spec.schema import describe_cells

        typer.echo(json.dumps(describe_cells(spec), indent=2))
        return
    from tabulate import tabulate

    every = spec.cells()
    cells = [every[k] for k in selection.pick(every)]
    keys = spec.axes()
    chosen = f" ({len(cells)} selected)" if len(cells) != len(every) else ""
    typer.echo(f"spec '{spec.name}': {counted(len(every), 'cell')}{chosen}" + (f" ({spec.description})" if spec.description else ""))
    typer.echo(tabulate([[c.id] + [getattr(c.config, k) for k in keys] for c in cells], headers=["cell"] + keys, tablefmt="github"))
    from .spec.schema import applies

    fixed = {k: v for k, v in cells[0].config.model_dump().items()
             if k not in keys and any(applies(c.config, k) for c in cells)}  # momentum only for SGD, ...
    typer.echo("fixed settings: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))


@app.command()
def report(
    results_dir: Path = typer.Argument(..., help="A spec's results folder, e.g. results/cpu."),
    check: bool = typer.Option(False, "--check", help="Only check that the tables match the run files (exit 1 if not)."),
) -> None:
    """Rebuild the summary tables and plots of a results folder from its run files alone."""
    from .report.build import check_report, write_report

    try:
        if check:
            problems = check_report(results_dir)
            for line in problems:
                typer.echo(f"{results_dir}: {line}", err=True)
            if problems:
                typer.echo(f"mnistbench: tables out of date; rebuild them with: mnistbench report {shlex.quote(str(results_dir))}", err=True)
                raise typer.Exit(EXIT_STALE)
            typer.echo(f"{results_dir}: tables, figures and run files agree")
            return
        from .run.locks import report_lock

        with report_lock(results_dir):  # shards that are still running rebuild it in turn
            written = write_report(results_dir)
        for path in written:
            typer.echo(f"wrote {path}")
    except MnistbenchError as e:
        fail(str(e))
    _print_report_warnings(results_dir)


def _print_report_warnings(results_dir: Path) -> None:
    import json

    try:
        warnings = json.loads((results_dir / "manifest.json").read_text()).get("warnings", [])
    except (OSError, ValueError):
        return
    for w in warnings:
        typer.echo(f"mnistbench: warning: {w}", err=True)


@app.command()
def site(
    results_dirs: List[Path] = typer.Argument(None, help="Results folders (default: every folder with runs/ under reference/ and results/)."),
    out: Path = typer.Option(Path("site"), "--out", help="Folder for the site's index.html."),
) -> None:
    """Build an index page linking every results folder's page, with a cross-folder table of the headline figures."""
    from .report.site.overview import build_site, discover

    try:
        path = build_site(list(results_dirs or discover()), out)
    except MnistbenchError as e:
        fail(str(e))
    typer.echo(f"wrote {path}")


@app.command()
def data(
    dataset: str = typer.Option("mnist", "--dataset", help="Which dataset."),
    data_dir: Optional[Path] = DataDir,
    no_download: bool = typer.Option(False, "--no-download", help="Never try to download missing files."),
    as_json: bool = JsonOption,
) -> None:
    """Locate (or download), parse and verify a dataset's files; print their hashes and official status."""
    from contextlib import nullcontext, redirect_stdout

    from tabulate import tabulate

    from .data.datasets import load_dataset

    try:
        # With --json, stdout carries the document only: the downloader's messages go to stderr.
        with redirect_stdout(sys.stderr) if as_json else nullcontext():
            ds = load_dataset(dataset, data_dir, allow_download=not no_download)
    except MnistbenchError as e:
        fail(str(e))
    if as_json:
        from .data.datasets import describe_dataset

        typer.echo(json.dumps(describe_dataset(ds), indent=2))
        return
    flag = {True: "official", False: "NOT official", None: "unverified (raw)"}
    typer.echo(f"{ds.info.title} in {ds.folder}: {len(ds.train)} training and {len(ds.test)} test samples")
    typer.echo(tabulate([[f.role, f.file, flag[f.official], f.sha256] for f in ds.files],
                        headers=["role", "file", "status", "sha256"], tablefmt="github"))


@app.command()
def env(as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout instead of text.")) -> None:
    """Print the environment a run would record: versions, hardware, threads, determinism settings."""
    from .environment import environment, format_environment

    record = environment()
    typer.echo(json.dumps(record, indent=2) if as_json else format_environment(record))


@app.command("profile-step")
def profile_step(
    model: str = typer.Option("lenet5", "--model", help="A registered model (`mnistbench models` lists them) "
                              "or a reference such as ./nets.py:build."),
    batch_size: int = typer.Option(64, "--batch-size", help="Training batch size."),
    steps: int = typer.Option(300, "--steps", help="Timed steps per configuration."),
    warmup: int = typer.Option(30, "--warmup", help="Untimed steps before them."),
    data_dir: Optional[Path] = DataDir,
    device: str = typer.Option("auto", "--device", metavar="cpu|cuda|auto", help="Where to train (auto: CUDA when present)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FOLDER", help="Also write profile.json and summary.md there."),
    as_json: bool = JsonOption,
) -> None:
    """Time each phase of a training step (batch, forward, zero_grad, backward, optimizer step) across Adam
    implementations, zero_grad modes and data paths."""
    from contextlib import nullcontext, redirect_stdout

    from .train.stepprofile import ProfileConfig, check_out, profile_steps, table, to_json, write_profile

    try:
        config = ProfileConfig(model, batch_size, steps, warmup, device, data_dir)
        if out is not None:
            check_out(out)
        # With --json, stdout carries the document only: the downloader's messages go to stderr.
        with redirect_stdout(sys.stderr) if as_json else nullcontext():
            profile = profile_steps(config)
        written = write_profile(profile, out) if out is not None else []
    except MnistbenchError as e:
        fail(str(e))
    typer.echo(to_json(profile).rstrip("\n") if as_json else table(profile))
    for path in written:
        typer.echo(f"wrote {path}", err=as_json)


@app.command("profile-layers")
def profile_layers(
    model: str = typer.Option("lenet5", "--model", help="A registered model (`mnistbench models` lists them) "
                              "or a reference such as ./nets.py:build."),
    batch_size: int = typer.Option(256, "--batch-size", help="Training batch size."),
    repeats: int = typer.Option(50, "--repeats", help="Timed rounds of each layer and of the whole step (the median is kept)."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed rounds before them."),
    device: str = typer.Option("auto", "--device", metavar="cpu|cuda|auto", help="Where to run (auto: CUDA when present)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: PyTorch's)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Model and batch in channels_last, as a spec's "
                                       "channels_last: true trains them."),
    onednn: bool = typer.Option(False, "--onednn", help="Also trace the oneDNN primitives of whole steps (CPU): "
                                "kernels, memory formats, reorders, time per step."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FOLDER", help="Also write layers.json and summary.md there."),
    as_json: bool = JsonOption,
) -> None:
    """Time each layer's forward and backward alone and place each on the roofline (docs/performance.md)."""
    from .train.layerprofile import LayerConfig, onednn_section, profile_layers, table, to_json, totals, write_profile
    from .train.stepprofile import check_out

    try:
        config = LayerConfig(model, batch_size, repeats, warmup, device, threads, channels_last, onednn)
        if out is not None:
            check_out(out)
        profile = profile_layers(config)
        written = write_profile(profile, out) if out is not None else []
    except MnistbenchError as e:
        fail(str(e))
    primitives = onednn_section(profile)
    typer.echo(to_json(profile).rstrip("\n") if as_json
               else f"{table(profile)}\n\n{totals(profile)}" + (f"\n\n{primitives}" if primitives else ""))
    for path in written:
        typer.echo(f"wrote {path}", err=as_json)


FailOn = typer.Option(
    None, "--fail-on", metavar="CHECK",
    help="Exit 1 if a configuration in both folders fails it (repeatable): 'accuracy<-0.2' (B − A of mean final "
    "accuracy, points), 'loss>0.01' (B − A of mean final loss), 'throughput<0.9' (B / A of median samples/s). "
    "Throughput measured under load is not judged: exit 4 when nothing else failed.",
)


@app.command()
def compare(
    a: Path = typer.Argument(..., metavar="A", help="The results folder before (the baseline), e.g. results/cpu."),
    b: Path = typer.Argument(..., metavar="B", help="The results folder after, compared with A."),
    fail_on: Optional[List[str]] = FailOn,
    as_json: bool = JsonOption,
) -> None:
    """Compare two results folders configuration by configuration: accuracy, loss (B − A), throughput (B / A)."""
    from .report.compare import check, compare_folders, comparison_markdown, parse_check, to_json

    try:
        checks = [parse_check(text) for text in fail_on or []]
        comparison = compare_folders(a, b)
    except MnistbenchError as e:
        fail(str(e))
    outcomes = check(comparison, checks)
    typer.echo(json.dumps(to_json(comparison, outcomes), indent=2) if as_json else comparison_markdown(comparison, outcomes))
    for w in comparison.warnings:
        typer.echo(f"mnistbench: warning: {w}", err=True)
    failed = [o for o in outcomes if o.failed]
    for o in failed:
        typer.echo(f"mnistbench: regression: {o.message}", err=True)
    refused = list(dict.fromkeys(o.label for o in outcomes if o.refused))
    if refused:
        typer.echo(f"mnistbench: error: throughput not judged for {', '.join(map(str, refused))}: measured under load or "
                   "with a wide epoch spread (summary above); rerun on a quiet machine", err=True)
    if failed or refused:
        raise typer.Exit(EXIT_REGRESSION if failed else EXIT_NOT_JUDGED)


@app.command()
def promote(
    results_dir: Path = typer.Argument(..., metavar="DIR", help="A complete results folder, e.g. results/cpu."),
    to: Path = typer.Option(Path("reference"), "--to", metavar="ROOT", help="The reference root; DIR goes to ROOT/<spec name>."),
    spec: Optional[Path] = typer.Option(None, "--spec", metavar="FILE", help="The folder's spec (default: bench/<spec name>.yaml)."),
    replace: bool = typer.Option(False, "--replace", help="Replace the spec's existing reference."),
) -> None:
    """Make a complete, `report --check`-clean results folder the reference of its spec (copied with its machine)."""
    from .report.promote import promote as promote_folder

    try:
        done = promote_folder(results_dir, to, spec, replace)
    except MnistbenchError as e:
        fail(str(e))
    verb = "replaced" if done.replaced else "created"
    typer.echo(f"{done.target} {verb} from {done.source}: {done.run_files} run files measured on {done.machine}")


class ExportFormat(str, Enum):
    tensorboard = "tensorboard"
    mlflow = "mlflow"


@app.command()
def export(
    results_dir: Path = typer.Argument(..., metavar="DIR", help="A spec's results folder, e.g. results/cpu."),
    to: ExportFormat = typer.Option(..., "--to", help="tensorboard: event files; mlflow: runs in a local file store."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write (default DIR/tensorboard or DIR/mlruns)."),
) -> None:
    """Export a results folder's per-epoch metrics, one run per cell, to TensorBoard or MLflow."""
    from .report.export import export_results

    try:
        summary = export_results(results_dir, to.value, out)
    except MnistbenchError as e:
        fail(str(e))
    unchanged = f", {len(summary.unchanged)} already exported" if summary.unchanged else ""
    typer.echo(f"exported {counted(len(summary.written), 'cell')} to {summary.format}{unchanged}: {summary.location}")
    if to is ExportFormat.tensorboard:
        typer.echo(f"view with: tensorboard --logdir {summary.out}")
    else:  # the UI comes with the full `mlflow` package; since MLflow 3 it opens a file store only when allowed
        typer.echo(f"view with: MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {summary.location}")


def _infer_options(spec: Optional[Path], results_dir: Optional[Path], **given):
    """The spec's ``inference:`` section (or the defaults) with the command line's values over it; the folder to read."""
    from .infer import InferOptions, load_options, with_overrides

    base = load_options(spec) if spec is not None else InferOptions()
    split = {k: v.split(",") if isinstance(v, str) and k in ("backends", "batch_sizes") else v for k, v in given.items()}
    options = with_overrides(base, **split)
    folder = results_dir or (Path(options.results) if options.results else None)
    if folder is None:
        raise MnistbenchError("name a results folder (DIR) or a spec whose inference section names one (--spec)")
    return options, folder


@app.command()
def infer(
    results_dir: Optional[Path] = typer.Argument(None, metavar="[DIR]", help="A results folder whose kept weights are "
                                                 "measured, e.g. reference/cpu (default: the spec's `results`)."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="A spec with an `inference:` section (bench/infer-cpu.yaml)."),
    backends: Optional[str] = typer.Option(None, "--backends", metavar="A,B",
                                           help="CPU: eager,compile,onnxruntime,openvino,int8; CUDA: eager,compile,fp16,bf16,onnxruntime."),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", metavar="N,M", help="Throughput batch sizes, e.g. 1,64,1024,10000."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads of every backend (default 2)."),
    device: Optional[str] = typer.Option(None, "--device", metavar="cpu|cuda", help="Where to run (default cpu)."),
    min_queries: Optional[int] = typer.Option(None, "--min-queries", help="Batch-1 queries timed at least (default 2000)."),
    min_seconds: Optional[float] = typer.Option(None, "--min-seconds", help="...for at least this long (default 2)."),
    timing_seeds: Optional[int] = typer.Option(None, "--timing-seeds", help="Time only the first N seeds of each model "
                                               "(accuracy: every seed)."),
    isolate: Optional[bool] = typer.Option(None, "--isolate/--no-isolate", help="Measure each model x backend in a "
                                           "fresh process (memory and cold start as a new process sees them)."),
    data_dir: Optional[Path] = DataDir,
    force: bool = typer.Option(False, "--force", help="Replace DIR/inference/ if it holds a result."),
) -> None:
    """Measure every trained model of a results folder on each backend: accuracy gate, batch-1 latency, throughput,
    peak memory, size; writes DIR/inference/ (inference.json, summary.md, error_vs_latency.png). docs/inference.md."""
    from .infer import check_writable, run_inference, write_inference

    try:
        options, folder = _infer_options(spec, results_dir, backends=backends, batch_sizes=batch_sizes, threads=threads,
                                         device=device, min_queries=min_queries, min_seconds=min_seconds,
                                         timing_seeds=timing_seeds, isolate=isolate)
        check_writable(folder, force)
        result = run_inference(folder, options, data_dir, progress=lambda line: typer.echo(line, err=True))
        written = write_inference(folder, result)
    except MnistbenchError as e:
        fail(str(e))
    for path in written:
        typer.echo(f"wrote {path}")
@app.command()
def robust(
    results_dirs: List[Path] = typer.Argument(..., metavar="DIR...", help="Results folders whose runs kept their weights."),
    data_dir: Optional[Path] = DataDir,
    subset: int = typer.Option(1000, "--attack-images", min=1, help="Attack the first N test images."),
    steps: int = typer.Option(40, "--pgd-steps", min=1, help="PGD steps (step size 2.5·ε/steps)."),
    restarts: int = typer.Option(1, "--pgd-restarts", min=1, help="PGD random starts; robust only if all fail."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corruptions and of the attacks' random starts."),
    no_attacks: bool = typer.Option(False, "--no-attacks", help="Skip FGSM/PGD (the slowest part)."),
    force: bool = typer.Option(False, "--force", help="Replace figures made from other weights or settings."),
) -> None:
    """Accuracy of every trained run under shifts, rotations, MNIST-C-style corruptions and FGSM/PGD (DIR/robustness/)."""
    from .robust import AttackSettings, Settings, evaluate_folder, write_summary

    attacks = None if no_attacks else AttackSettings(steps=steps, restarts=restarts, subset=subset, seed=seed)
    settings = Settings(corruption_seed=seed, attacks=attacks)
    try:
        for folder in results_dirs:
            def say(run: str, reused: bool, seconds: float, folder=folder) -> None:
                typer.echo(f"{folder}: {run} " + ("kept (same weights and settings)" if reused else f"evaluated in {seconds:.0f} s"))

            results = evaluate_folder(folder, settings, data_dir, allow_download=False, force=force, on_run=say)
            for path in write_summary(folder, results):
                typer.echo(f"wrote {path}")
    except MnistbenchError as e:
        fail(str(e))


if __name__ == "__main__":  # pragma: no cover - `python -m mnistbench.cli`; the console script is cli:app
    sys.exit(app())
