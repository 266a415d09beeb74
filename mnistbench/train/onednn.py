"""Which oneDNN primitives a CPU training step executes, in which memory formats, and how long each takes (issue #27).

PyTorch runs a CPU convolution through oneDNN: the library picks an implementation (``jit:avx2``, ``jit:avx512_core``,
``gemm:jit``...) and the memory formats it works in, and where those are not the tensors' own (NCHW is ``abcd``,
channels-last ``acdb``) it adds *reorders*, copies into a blocked format such as ``aBcd8b`` (channels in blocks of 8)
and back, around every call. oneDNN's verbose mode prints one line per executed primitive with the time it took;
``record`` turns it on around a function, catches those lines (they go to the process's standard output, below
Python) and ``summarize`` adds them up per primitive and per step: what a layer's time is made of, kernel against
layout copies. Matrix multiplies of linear layers go to the BLAS, not to oneDNN, and are not listed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from ..errors import MnistbenchError


@dataclass(frozen=True)
class Primitive:
    """One executed primitive, as oneDNN's verbose line names it."""

    kind: str  # convolution, reorder, pooling, ...
    implementation: str  # jit:avx2, gemm:jit, jit:uni, ...
    propagation: str  # forward_training, backward_data, backward_weights; undef for a reorder
    formats: str  # the memory formats of its arguments, e.g. "src abcd · wei Acdb8a · dst aBcd8b"
    problem: str  # oneDNN's problem descriptor: mb128_ic1oc6_ih28oh24kh5..., or a reorder's 128x6x24x24
    seconds: float


@dataclass(frozen=True)
class PrimitiveRow:
    """One kind of primitive call of a step: what it is, how often a step calls it and for how long in all."""

    kind: str
    implementation: str
    propagation: str
    formats: str
    problem: str
    calls_per_step: float
    seconds_per_step: float


@dataclass(frozen=True)
class OnednnProfile:
    """The primitives of ``steps`` traced steps, per step, the slowest first; ``isa`` as oneDNN reports it."""

    steps: int
    rows: list[PrimitiveRow]
    isa: Optional[str] = None

    def seconds_per_step(self, kind: Optional[str] = None) -> float:
        return sum(r.seconds_per_step for r in self.rows if kind is None or r.kind == kind)


def formats(descriptors: str) -> str:
    """"src:f32:a:blocked:abcd::f0 wei:f32:ap:blocked:Acdb8a::f0 bia:undef::undef:::" -> "src abcd · wei Acdb8a"."""
    parts = []
    for md in descriptors.split():
        fields = md.split(":")
        if len(fields) >= 5 and fields[1] != "undef":
            parts.append(f"{fields[0]} {fields[4] or fields[3]}")
    return " · ".join(parts)


def parse(text: str) -> tuple[list[Primitive], Optional[str]]:
    """The executed primitives in oneDNN verbose output (v3's ``onednn_verbose,v1,primitive,exec,...`` and v2's
    ``dnnl_verbose,exec,...`` lines), and the instruction set it reports; other lines are ignored."""
    primitives, isa = [], None
    for line in text.splitlines():
        parts = line.strip().split(",")
        if not parts[0].endswith("_verbose"):
            continue
        if "info" in parts[:4] and any(p.startswith("isa:") for p in parts):
            isa = next(p for p in parts if p.startswith("isa:"))[4:].strip()
            continue
        if "exec" not in parts[:5]:
            continue
        f = parts[parts.index("exec"):]  # exec, engine, kind, implementation, propagation, formats, ..., problem, ms
        if len(f) < 8 or f[1] != "cpu":
            continue
        try:
            ms = float(f[-1])
        except ValueError:
            continue
        primitives.append(Primitive(f[2], f[3], f[4], formats(f[5]), f[-2], ms / 1e3))
    return primitives, isa


def summarize(primitives: list[Primitive], steps: int, isa: Optional[str] = None) -> OnednnProfile:
    """Calls and seconds per step of each distinct primitive (kind, implementation, propagation, formats, problem)."""
    totals: dict[tuple, list] = defaultdict(lambda: [0, 0.0])
    for p in primitives:
        key = (p.kind, p.implementation, p.propagation, p.formats, p.problem)
        totals[key][0] += 1
        totals[key][1] += p.seconds
    rows = [PrimitiveRow(*key, calls / steps, seconds / steps) for key, (calls, seconds) in totals.items()]
    return OnednnProfile(steps, sorted(rows, key=lambda r: -r.seconds_per_step), isa)


@contextlib.contextmanager
def _stdout_into(sink) -> Iterator[None]:
    """Point the process's file descriptor 1 at ``sink`` (what C code prints goes there), flushing both sides."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    os.dup2(sink.fileno(), 1)
    try:
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def record(run: Callable[[], None], steps: int) -> OnednnProfile:
    """Run ``run`` (``steps`` training steps) with oneDNN's verbose mode on and add up the primitives it executed."""
    import torch

    if os.name != "posix":
        raise MnistbenchError("--onednn reads oneDNN's verbose output from the process's standard output: Linux or macOS only")
    if not torch.backends.mkldnn.is_available():
        raise MnistbenchError("--onednn: this PyTorch was built without oneDNN (torch.backends.mkldnn.is_available() is False)")
    with tempfile.TemporaryFile() as sink, contextlib.ExitStack() as traced:
        traced.enter_context(_stdout_into(sink))
        try:
            traced.enter_context(torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON))
        except AssertionError:  # PyTorch's own check: a oneDNN built without its verbose mode
            raise MnistbenchError("--onednn: this PyTorch's oneDNN has no verbose mode to trace") from None
        run()
        traced.close()  # verbose mode off, the standard output back: then read what was caught
        sink.seek(0)
        text = sink.read().decode(errors="replace")
    primitives, isa = parse(text)
    return summarize(primitives, steps, isa)


def table(profile: OnednnProfile, step_seconds: float) -> str:
    """One row per primitive: µs and calls per step, share of the step, implementation, propagation, formats, problem."""
    from tabulate import tabulate

    rows = [[r.kind, r.implementation, r.propagation, f"{r.seconds_per_step * 1e6:,.1f}", f"{r.calls_per_step:g}",
             f"{r.seconds_per_step / step_seconds:.1%}", r.formats, r.problem] for r in profile.rows]
    headers = ["primitive", "implementation", "pass", "µs per step", "calls", "share of step", "formats", "problem"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def totals(profile: OnednnProfile, step_seconds: float) -> str:
    """One sentence: oneDNN's share of the step, its convolutions' and its reorders'."""
    share = lambda kind=None: profile.seconds_per_step(kind) / step_seconds  # noqa: E731
    return (f"oneDNN ran {share():.0%} of the step ({profile.seconds_per_step() * 1e6:,.1f} µs of "
            f"{step_seconds * 1e6:,.1f}): convolutions {share('convolution'):.0%}, reorders between PyTorch's layouts "
            f"and oneDNN's blocked ones {share('reorder'):.0%}; instruction set {profile.isa or 'not reported'}; "
            f"{profile.steps} steps traced.")
