"""`python -m converters` lists the converters; `python -m converters NAME ...` runs one."""

import sys

USAGE = """usage: python -m converters {fp16,int8,dynamic_batch} ...

converters:
  fp16           python -m converters.fp16 IN.onnx OUT.onnx [--keep-io-types] [--block-op OP ...]
                     [--auto-block] [--tolerance T] [--samples N] [--inputs [NAME=]FILE.npy ...]
                     [--provider {cpu,cuda}] [--skip-validation] [--force]
                 FP32 -> FP16 (onnxconverter-common), validated against FP32 with onnxruntime
  int8           python -m converters.int8 IN.onnx OUT.onnx --video CLIP.mp4 [--det DET.onnx]
                     [--mode auto|dynamic|static] [--keep-float GROUPS] [--frames N] [--max-mean PX]
                     [--max-p95 PX] [--min-iou X] [--min-worst-iou X] [--force] [--overwrite]
                 FP32 -> INT8 (onnxruntime.quantization) for the CPU, calibrated and validated on your video
  dynamic_batch  python -m converters.dynamic_batch IN.onnx OUT.onnx [--test-batch N] [--atol A] [--force]
                 make dim 0 of inputs/outputs a symbolic 'batch', verified batch-N vs batch-1

Run `python -m converters.NAME --help` for details."""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    name, rest = argv[0], argv[1:]
    if name == "fp16":
        from .fp16 import main as run
    elif name == "int8":
        from .int8 import main as run
    elif name in ("dynamic_batch", "dynamic-batch"):
        from .dynamic_batch import main as run
    else:
        print(USAGE, file=sys.stderr)
        print(f"error: unknown converter {name!r}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
