"""Model converters for wanprep_torch: FP16 and INT8 conversion, dynamic batch axis.

    python -m converters.fp16 IN.onnx OUT.onnx [...]
    python -m converters.int8 IN.onnx OUT.onnx --video CLIP.mp4 [--det DET.onnx] [...]
    python -m converters.dynamic_batch IN.onnx OUT.onnx [...]
"""

from ._common import ConversionError, InputError, ValidationFailed

# Submodules load lazily: importing them here would make `python -m converters.fp16` warn that
# the module was already imported, and keep onnxconverter-common optional for dynamic_batch.
_LAZY = {
    "convert_fp16": "fp16",
    "convert_and_validate": "fp16",
    "validate": "fp16",
    "Report": "fp16",
    "convert_int8": "int8",
    "Int8Settings": "int8",
    "Thresholds": "int8_check",
    "prepare_int8": "int8_cache",
    "Int8Record": "int8_cache",
    "Int8Fallback": "int8_cache",
    "make_dynamic_batch": "dynamic_batch",
    "verify_batch": "dynamic_batch",
}

__all__ = ["ConversionError", "InputError", "ValidationFailed", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
