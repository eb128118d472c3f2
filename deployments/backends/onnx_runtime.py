"""ONNX Runtime pieces both ONNX backends share: the session and the cached int8 copy."""

from __future__ import annotations

from pathlib import Path

from deployments.config import ModelConfig


def open_session(graph: Path, config: ModelConfig):
    """An InferenceSession with `threads` intra-op threads; CUDA first when asked for and present."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if config.device in ("cuda", "auto") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(graph), options, providers=providers)


def quantized_copy(source: Path, cache_dir: Path) -> Path:
    """An int8 (dynamic, weights only) copy of `source` in `cache_dir`, built once."""
    target = cache_dir / "onnx-int8" / f"{source.parent.name}-{source.stem}.int8.onnx"
    if not target.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial.onnx")
        quantize_dynamic(str(source), str(partial), weight_type=QuantType.QInt8)
        partial.rename(target)
    return target
