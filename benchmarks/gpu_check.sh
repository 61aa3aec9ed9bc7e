#!/usr/bin/env bash
# The GPU check, in one run on a machine with a CUDA device (under 8 minutes):
#
#   1. env.json          which Python and torch ran, whether torch sees the GPU, which optional
#                        packages were importable (MONAI: DenseNet121 for the benchmarks);
#   2. tests.json/.log   the CUDA-marked tests of the attacks, defenses, detectors and device
#                        selection (pytest -m gpu): outputs on the GPU, equal to the CPU's within
#                        tolerance, and the number of host synchronisations inside attack steps;
#   3. bench_sia.json    benchmarks/bench_sia.py at 224 px on cuda (DenseNet121, or the small CNN
#                        where MONAI is missing; the JSON names the arch);
#   4. bench_defenses.json  benchmarks/bench_defenses.py --device cuda at 224 px (TV, TVM, JPEG);
#   5. bench_guard.json  benchmarks/bench_guard.py --device cuda --no-http at 224 px: the guard's
#                        overhead over the bare model in process (its copies in one forward pass).
#
# Everything is written to $OUT (./gpu-results when unset); each step runs under `timeout` and a
# shared deadline, so a hung step costs its share and the next ones still run. Installs nothing
# beyond `make install`, and that only when no Python with a CUDA build of torch is at hand: the
# repo's .venv is used when its torch sees a GPU, else python3 (PYTHONPATH=src), else `make
# install` is tried. The exit status is the tests' (non-zero also when no GPU is usable).
#
#   bash benchmarks/gpu_check.sh            # from the repository root
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
DEADLINE=${GPU_CHECK_SECONDS:-470}   # the whole run; the steps below share what is left
LOG="$OUT/run.log"
: >"$LOG"

say() { echo "[gpu_check ${SECONDS}s] $*" | tee -a "$LOG" >&2; }

# seconds for the next step: at most $1, and never past the deadline (keeping $2 for later steps)
budget() {
    local cap=$1 left=$((DEADLINE - SECONDS - ${2:-0}))
    ((left < cap)) && cap=$left
    ((cap < 10)) && cap=10
    echo "$cap"
}

sees_cuda() {  # $@: a Python command line
    "$@" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1
}

export PYTHONUNBUFFERED=1
PY=()
if [[ -x .venv/bin/python ]] && sees_cuda .venv/bin/python; then
    PY=(.venv/bin/python)
elif command -v python3 >/dev/null && sees_cuda python3 && PYTHONPATH=src python3 -c "import medrobust.attacks" 2>/dev/null; then
    PY=(python3)
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
    say "no Python with a CUDA build of torch and medrobust's needs found: trying make install"
    timeout "$(budget 240 200)" make install >>"$LOG" 2>&1 || say "make install failed (see run.log)"
    if [[ -x .venv/bin/python ]] && sees_cuda .venv/bin/python; then
        PY=(.venv/bin/python)
    fi
fi

ENV_PY=("${PY[@]}")
((${#ENV_PY[@]})) || { [[ -x .venv/bin/python ]] && ENV_PY=(.venv/bin/python); } || ENV_PY=(python3)
"${ENV_PY[@]}" - "$OUT/env.json" <<'EOF' 2>>"$LOG"
import importlib.util, json, platform, sys
info = {"python": sys.executable, "python_version": platform.python_version()}
try:
    import torch
    info.update(torch=torch.__version__, cuda_build=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                matmul_fp32_precision=getattr(torch.backends.cuda.matmul, "fp32_precision", None),
                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
except Exception as err:  # noqa: BLE001
    info["torch_error"] = repr(err)
info["importable"] = {m: importlib.util.find_spec(m) is not None
                      for m in ("medrobust", "monai", "pydantic", "hypothesis", "skimage", "PIL", "scipy")}
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info))
EOF

if ((${#PY[@]} == 0)); then
    say "no usable GPU: torch here is a CPU build or sees no device (env.json); nothing else run"
    exit 2
fi
say "using ${PY[*]}"

# --- 2. the CUDA-marked tests ---------------------------------------------------------------
GPU_TESTS=(tests/attacks/test_device_path.py tests/attacks/test_sia.py tests/attacks/test_sit.py
           tests/defenses/test_gpu.py tests/detection/test_device_path.py tests/models/test_device.py)
say "CUDA-marked tests"
timeout "$(budget 210 200)" "${PY[@]}" -m pytest -m gpu -q -p no:cacheprovider -W ignore::DeprecationWarning \
    --junitxml="$OUT/.tests.xml" "${GPU_TESTS[@]}" >"$OUT/tests.log" 2>&1
TESTS_RC=$?
say "tests exit status $TESTS_RC"
"${PY[@]}" - "$OUT/.tests.xml" "$OUT/tests.json" "$TESTS_RC" <<'EOF' 2>>"$LOG"
import json, sys, xml.etree.ElementTree as ET
summary = {"exit_status": int(sys.argv[3]), "tests": []}
try:
    for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        detail = next((c.get("message", "")[:500] for c in case if c.tag in ("failure", "error", "skipped")), "")
        summary["tests"].append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                                 "seconds": float(case.get("time", 0)), "detail": detail})
except (OSError, ET.ParseError) as err:
    summary["error"] = f"no JUnit report: {err}"
counts = {}
for t in summary["tests"]:
    counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
summary["counts"] = counts
json.dump(summary, open(sys.argv[2], "w"), indent=2)
print(json.dumps(counts))
EOF
rm -f "$OUT/.tests.xml"

# --- 3. SIA at 224 px on cuda -------------------------------------------------------------------
ARCH=densenet121
"${PY[@]}" -c "import monai" 2>/dev/null || { ARCH=small-cnn; say "MONAI missing: bench_sia uses --arch small-cnn"; }
say "bench_sia (224 px, cuda, $ARCH)"
timeout "$(budget 150 90)" "${PY[@]}" benchmarks/bench_sia.py --sizes 224 --device cuda --arch "$ARCH" \
    --steps 5 --batch 4 --copies 20 --variants channels_last bf16 --sit-repeats 3 --step-repeats 5 --repeats 2 \
    --out "$OUT/bench_sia.json" >/dev/null 2>>"$LOG" || say "bench_sia failed or timed out (exit $?)"

# --- 4. TV / TVM / JPEG at 224 px on cuda --------------------------------------------------------
say "bench_defenses (224 px, cuda)"
timeout "$(budget 120 60)" "${PY[@]}" benchmarks/bench_defenses.py --device cuda --size 224 --batch 32 --repeats 3 \
    --out "$OUT/bench_defenses.json" >/dev/null 2>>"$LOG" || say "bench_defenses failed or timed out (exit $?)"

# --- 5. the guard's overhead at 224 px on cuda (in process: its six images in one forward pass) -----
say "bench_guard (224 px, cuda, in process)"
timeout "$(budget 90 0)" "${PY[@]}" benchmarks/bench_guard.py --device cuda --sizes 224 --no-http --requests 50 \
    --out "$OUT/bench_guard.json" >/dev/null 2>>"$LOG" || say "bench_guard failed or timed out (exit $?)"

say "done; results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit "$TESTS_RC"
