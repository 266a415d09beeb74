"""The ONNX path: one export per trained model (checked for equal outputs), ONNX Runtime and OpenVINO sessions with
the shared thread budget, and int8 static quantization calibrated on training images."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import MnistbenchError
from .prepared import BackendContext, Prepared

INPUT, OUTPUT = "images", "logits"
OPSET = 17
# Export is fp32 arithmetic reordered: outputs agree to float32 rounding, not bit for bit.
EXPORT_RTOL, EXPORT_ATOL = 1e-4, 1e-4
CALIBRATION_BATCH = 100


def export_onnx(model: torch.nn.Module, ctx: BackendContext) -> Path:
    """``model`` as ``workdir/model.onnx`` (batch dimension dynamic), exported once and reused by every ONNX backend.

    torch 2.14's default (dynamo) exporter fails on these Sequential models here; the TorchScript exporter works."""
    path = ctx.workdir / "model.onnx"
    if path.exists():
        return path
    model = model.eval().to("cpu", torch.float32)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, once per model
        torch.onnx.export(model, (ctx.example[:2].cpu(),), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    _check_equal(model, path, ctx)
    return path


def _check_equal(model: torch.nn.Module, path: Path, ctx: BackendContext) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT: ctx.example.cpu().numpy()})[0]
    with torch.inference_mode():
        want = model(ctx.example.cpu()).numpy()
    if not np.allclose(got, want, rtol=EXPORT_RTOL, atol=EXPORT_ATOL):
        raise MnistbenchError(f"the ONNX export's outputs differ from PyTorch's (largest difference "
                              f"{float(np.abs(got - want).max()):.3g})")


def session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no per-session warnings on stderr
    return options


def ort_prepared(path: Path, ctx: BackendContext, files: dict[str, int]) -> Prepared:
    import onnxruntime as ort

    cuda = ctx.device.startswith("cuda")
    provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise MnistbenchError(f"ONNX Runtime here has no {provider} (install onnxruntime-gpu for CUDA)")
    session = ort.InferenceSession(str(path), session_options(ctx.threads), providers=[provider])
    # Inputs stay on the host: with the CUDA provider a query includes its copies to and from the GPU.
    return Prepared(run=lambda x: session.run(None, {INPUT: x})[0],
                    to_input=lambda x: np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32),
                    to_logits=lambda out: np.array(out, dtype=np.float32), files=files)


def openvino_prepared(onnx_path: Path, ctx: BackendContext) -> Prepared:
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    xml = ctx.workdir / "openvino.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)  # the IR as deployed: fp32, like the other fp32 formats
    config = {"INFERENCE_NUM_THREADS": ctx.threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": "f32"}  # f32: no silent bf16 on CPUs that have it, so fp32 means fp32
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return request.get_output_tensor(0).data  # a view of the request's buffer: to_logits copies it

    size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    return Prepared(run=run, to_input=lambda x: np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32),
                    to_logits=lambda out: np.array(out, dtype=np.float32), files={"openvino IR": size})


def quantize_int8(fp32: Path, ctx: BackendContext) -> Path:
    """Static int8 (QDQ, per-channel int8 weights, uint8 activations, min-max calibration) of ``fp32``, calibrated on
    ``ctx.calibration`` (training images only: calibrating on the test set would leak it into the figure)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, images: np.ndarray):
            self.batches = iter({INPUT: images[i:i + CALIBRATION_BATCH]} for i in range(0, len(images), CALIBRATION_BATCH))

        def get_next(self):
            return next(self.batches, None)

    pre, out = ctx.workdir / "model.pre.onnx", ctx.workdir / "model.int8.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Reader(ctx.calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return out
