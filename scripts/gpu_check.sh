#!/usr/bin/env bash
# GPU check in one device call: onnxruntime-gpu, the GPU tests, then the FP32/FP16 throughput table.
#
#   bash scripts/gpu_check.sh prepare     HERE, once: fill bench_models/gpu_carry/ (git-ignored) with the
#                                         YOLOv10m stand-in and onnxconverter_common (pure Python; the GPU
#                                         image lacks it), for the call's carry
#   bash scripts/gpu_check.sh [ARGS...]   ON THE GPU MACHINE: install onnxruntime-gpu from /tmp/ortw (the
#                                         chunks split_ort_gpu.sh made, copied there by earlier calls), check
#                                         the CUDA provider, run tests/test_gpu.py, then
#                                         scripts/gpu_check.py --out $OUT ARGS (e.g. --vit l)
#
# The device calls, in order, are in scripts/gpu_check.py's docstring. Everything worth keeping lands
# in $OUT: gpu_check.log (this output), gpu_env.json, junit-gpu.xml, gpu_table.md, gpu_check.json.
# Here, a CPU smoke run of the same steps (tests skip, no onnxruntime-gpu):
#   OUT=/tmp/gc WANPREP_REQUIRE_GPU=0 bash scripts/gpu_check.sh --device cpu --vit tiny --det testkit --frames 2
# Time limits (seconds): TEST_TIMEOUT (default 180) and BENCH_TIMEOUT (330) keep the whole call under
# ~10 minutes; gpu_check.py also skips rows past its own --budget-s (300).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
CARRY=bench_models/gpu_carry
YOLO=yolov10m-standin.onnx
PY=${PYTHON:-python3}

prepare() {
    mkdir -p "$CARRY/site" || return 1
    local src="" c
    for c in "${WANPREP_YOLO:-}" ../shared/models/$YOLO /work/shared/models/$YOLO; do
        if [ -n "$c" ] && [ -f "$c" ]; then src=$c; break; fi
    done
    if [ -z "$src" ]; then echo "prepare: $YOLO not found (set WANPREP_YOLO)"; return 1; fi
    cp -f "$src" "$CARRY/$YOLO" || return 1
    local occ
    occ=$("$PY" -c 'import onnxconverter_common, os; print(os.path.dirname(onnxconverter_common.__file__))') ||
        { echo "prepare: onnxconverter_common is not installed here (pip install onnxconverter-common)"; return 1; }
    rm -rf "$CARRY/site/onnxconverter_common"
    cp -r "$occ" "$CARRY/site/" || return 1
    find "$CARRY/site" -name __pycache__ -prune -exec rm -rf {} +
    # Carried to another Python (3.12 there): only pure-Python packages travel this way.
    if [ -n "$(find "$CARRY/site" -name '*.so' -print -quit)" ]; then echo "prepare: compiled files in $CARRY/site"; return 1; fi
    if ! git check-ignore -q "$CARRY"; then echo "prepare: $CARRY is not git-ignored; carry needs an ignored path"; return 1; fi
    local carry_b tree_b
    carry_b=$(du -sb "$CARRY" | cut -f1)
    tree_b=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
    echo "prepared $CARRY: $((carry_b / 1048576)) MiB (+ working tree $((tree_b / 1048576)) MiB; a call carries 64 MiB at most)"
    if [ $((carry_b + tree_b)) -gt $((63 * 1048576)) ]; then echo "prepare: too large for one call"; return 1; fi
    echo "next: the .ortwN calls, then run carry=[\"$CARRY\"] timeout_s=580 command=\"bash scripts/gpu_check.sh\""
}

install_ort() {
    if [ -d /tmp/ortsite/onnxruntime ]; then
        echo "onnxruntime-gpu already installed in /tmp/ortsite"
        return 0
    fi
    if [ ! -f /tmp/ortw/NAME ] || ! compgen -G "/tmp/ortw/part*" >/dev/null; then
        echo "no onnxruntime-gpu chunks in /tmp/ortw (NAME + part*): make the .ortwN calls first, back to back"
        echo "on this same warm machine (see ../shared/device/README.md)"
        return 1
    fi
    local name
    name=$(cat /tmp/ortw/NAME)
    ls -la /tmp/ortw
    cat /tmp/ortw/part* >"/tmp/ortw/$name" || return 1
    echo "reassembled $name: $(du -h "/tmp/ortw/$name" | cut -f1)"
    if ! "$PY" -m pip install -q --no-index --no-deps --target /tmp/ortsite "/tmp/ortw/$name"; then
        echo "pip could not install $name: a chunk missing or from another machine? (each .ortwN call must"
        echo "reach this same warm machine)"
        rm -rf /tmp/ortsite
        return 1
    fi
}

main() {
    local t0=$SECONDS
    step() { echo; echo "=== [gpu_check.sh +$((SECONDS - t0))s] $*"; }
    step "machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "nvidia-smi failed"
    "$PY" -V; df -h /tmp | tail -1
    step "onnxruntime-gpu"
    install_ort || echo "continuing without onnxruntime-gpu: the CUDA check below will say what runs"
    # /tmp/ortsite first: it must shadow the image's CPU onnxruntime. The carried site comes after
    # the repository; the image's own packages (onnx, torch, pytest, tqdm) follow PYTHONPATH.
    local pp=$ROOT
    [ -d /tmp/ortsite/onnxruntime ] && pp=/tmp/ortsite:$pp
    [ -d "$CARRY/site" ] && pp=$pp:$ROOT/$CARRY/site
    export PYTHONPATH=$pp${PYTHONPATH:+:$PYTHONPATH}
    [ -f "$CARRY/$YOLO" ] && export WANPREP_YOLO=$ROOT/$CARRY/$YOLO
    export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
    echo "PYTHONPATH=$PYTHONPATH"
    echo "WANPREP_YOLO=${WANPREP_YOLO:-(not carried: gpu_check.py searches ../shared/models)}"

    step "environment, imports and the ONNX Runtime CUDA provider"
    "$PY" scripts/gpu_check.py --env-only --out "$OUT" "$@"
    local env_rc=$?
    if [ $env_rc -ne 0 ]; then
        echo "ONNX Runtime cannot run on CUDA here (rc $env_rc): skipping the GPU tests and the benchmark"
        return $env_rc
    fi

    step "GPU tests (a missing CUDA provider fails them rather than skipping)"
    WANPREP_REQUIRE_GPU=${WANPREP_REQUIRE_GPU:-1} timeout "${TEST_TIMEOUT:-180}" "$PY" -m pytest -q -m gpu tests/test_gpu.py tests/test_draw.py \
        -p no:cacheprovider -rs --junitxml "$OUT/junit-gpu.xml"
    local test_rc=$?
    [ $test_rc -eq 124 ] && echo "GPU tests timed out after ${TEST_TIMEOUT:-180} s"

    step "benchmark: scripts/gpu_check.py $*"
    timeout "${BENCH_TIMEOUT:-330}" "$PY" scripts/gpu_check.py --out "$OUT" "$@"
    local bench_rc=$?
    [ $bench_rc -eq 124 ] && echo "benchmark timed out after ${BENCH_TIMEOUT:-330} s; $OUT/gpu_table.md has the rows it finished"

    step "done: tests rc=$test_rc, benchmark rc=$bench_rc"
    [ $test_rc -eq 0 ] && [ $bench_rc -eq 0 ]
}

if [ "${1:-}" = prepare ]; then
    shift
    prepare "$@"
    exit $?
fi

OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT" || exit 2
main "$@" 2>&1 | tee -a "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
