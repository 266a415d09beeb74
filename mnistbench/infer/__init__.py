"""Inference over a results folder's trained weights: latency, throughput, peak memory and size per backend, each
behind an accuracy gate (docs/inference.md). ``mnistbench infer DIR`` writes ``DIR/inference/``."""

from __future__ import annotations

from pathlib import Path

from ..errors import MnistbenchError
from ..files import write_atomic
from .options import InferOptions, load_options, parse_options, with_overrides
from .result import RESULT_FILE, InferenceResult, load_result

OUT_DIR = "inference"

__all__ = ["InferOptions", "InferenceResult", "load_options", "parse_options", "with_overrides", "load_result",
           "output_dir", "check_writable", "run_inference", "write_inference", "OUT_DIR", "RESULT_FILE"]


def output_dir(folder: Path) -> Path:
    return Path(folder) / OUT_DIR


def check_writable(folder: Path, force: bool) -> None:
    """Before measuring: a finished inference result is never replaced unless asked (``--force``)."""
    if not (Path(folder) / "runs").is_dir():
        raise MnistbenchError(f"{folder}: not a results folder (no runs/ in it)")
    existing = output_dir(folder) / RESULT_FILE
    if existing.exists() and not force:
        raise MnistbenchError(f"{existing} exists: pass --force to measure again and replace it")


def run_inference(folder: Path, options: InferOptions, data_dir=None, progress=lambda line: None) -> InferenceResult:
    from .runner import run_inference as run

    return run(Path(folder), options, data_dir, progress)


def write_inference(folder: Path, result: InferenceResult) -> list[Path]:
    """``inference.json``, ``summary.md`` and the error-vs-latency figure in ``folder/inference/``."""
    from .plot import write_error_vs_latency
    from .report import summarize, write_markdown

    out = output_dir(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / RESULT_FILE, result.to_json())
    figures = write_error_vs_latency(out, summarize(result), Path(folder).name)
    return [out / RESULT_FILE, write_markdown(out, result, [p.name for p in figures]), *figures]
