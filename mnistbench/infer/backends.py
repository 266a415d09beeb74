"""The backends one trained model runs on: each turns a loaded fp32 ``nn.Module`` into a ``Prepared`` query function.

Every backend gets the same intra-op thread budget (``BackendContext.threads``): torch through the runner's
``torch.set_num_threads``, ONNX Runtime through ``intra_op_num_threads``, OpenVINO through ``INFERENCE_NUM_THREADS``
(neither reads torch's setting). The CUDA paths (eager, compile with CUDA graphs, fp16, bf16, ONNX Runtime CUDA) are
written but were not run where this was developed (no GPU): docs/inference.md.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import MnistbenchError
from .prepared import BackendContext, Prepared


@dataclass(frozen=True)
class Backend:
    name: str
    prepare: Callable[[torch.nn.Module, BackendContext], Prepared]
    requires: tuple[str, ...] = ()  # importable modules (the `infer` extra)
    describe: str = ""
    torch_native: bool = False  # runs the safetensors weights as they are (no exported file of its own)

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def preload(self) -> None:
        """Import the libraries before any memory baseline, so a backend's peak is its model's, not its library's code
        (and does not depend on which backend happened to import a shared library first)."""
        for name in self.requires + (("onnxruntime.quantization",) if self.name == "int8" else ()):
            importlib.import_module(name)


def _torch_prepared(model: torch.nn.Module, device: str, dtype: torch.dtype = torch.float32) -> Prepared:
    cuda = device.startswith("cuda")
    return Prepared(
        run=model,
        to_input=lambda x: x.to(device=device, dtype=dtype).contiguous(),
        to_logits=lambda out: out.detach().float().cpu().numpy().copy(),
        sync=(lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None),
        context=torch.inference_mode,
    )


def eager(model: torch.nn.Module, ctx: BackendContext) -> Prepared:
    return _torch_prepared(model.eval().to(ctx.device), ctx.device)


def compiled(model: torch.nn.Module, ctx: BackendContext) -> Prepared:
    """torch.compile (Inductor); on CUDA with CUDA graphs (mode='reduce-overhead'). Compiles lazily, once per batch
    size: the first query (the cold start) includes the compile."""
    torch._dynamo.reset()  # a fresh cache per model, so recompile limits never carry over from the previous one
    cuda = ctx.device.startswith("cuda")
    module = torch.compile(model.eval().to(ctx.device), mode="reduce-overhead" if cuda else None)
    prepared = _torch_prepared(module, ctx.device)
    if cuda:  # a CUDA-graph output is overwritten by the next replay: keep a copy
        prepared.run = lambda x: module(x).clone()
    return prepared


def half(dtype: torch.dtype) -> Callable[[torch.nn.Module, BackendContext], Prepared]:
    def prepare(model: torch.nn.Module, ctx: BackendContext) -> Prepared:
        return _torch_prepared(model.eval().to(device=ctx.device, dtype=dtype), ctx.device, dtype)

    return prepare


def _onnxruntime(model: torch.nn.Module, ctx: BackendContext) -> Prepared:
    from .onnx import export_onnx, ort_prepared

    path = export_onnx(model, ctx)
    return ort_prepared(path, ctx, {"onnx": path.stat().st_size})


def _int8(model: torch.nn.Module, ctx: BackendContext) -> Prepared:
    from .onnx import export_onnx, ort_prepared, quantize_int8

    path = quantize_int8(export_onnx(model, ctx), ctx)
    return ort_prepared(path, ctx, {"int8 onnx": path.stat().st_size})


def _openvino(model: torch.nn.Module, ctx: BackendContext) -> Prepared:
    from .onnx import export_onnx, openvino_prepared

    return openvino_prepared(export_onnx(model, ctx), ctx)


ONNX = ("onnx", "onnxruntime")
BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("eager", eager, torch_native=True, describe="PyTorch eager fp32 under torch.inference_mode"),
    Backend("compile", compiled, torch_native=True, describe="torch.compile (Inductor); CUDA: mode='reduce-overhead' (CUDA graphs)"),
    Backend("fp16", half(torch.float16), torch_native=True, describe="PyTorch eager, weights and inputs in float16 (CUDA)"),
    Backend("bf16", half(torch.bfloat16), torch_native=True, describe="PyTorch eager, weights and inputs in bfloat16 (CUDA)"),
    Backend("onnxruntime", _onnxruntime, ONNX, "ONNX Runtime fp32 (CPU or CUDA execution provider), exported once"),
    Backend("openvino", _openvino, ("onnx", "openvino"), "OpenVINO fp32 (CPU plugin) from the exported ONNX file"),
    Backend("int8", _int8, ONNX, "ONNX Runtime int8: static QDQ quantization, per-channel weights, calibrated on "
            "training images"),
)}


def backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise MnistbenchError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None
