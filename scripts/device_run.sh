#!/usr/bin/env bash
# scripts/device_run.sh — run ON the GPU machine, from the repository root, after
# scripts/prepare_device.sh staged .deps/ and .testdata/ here. Steps:
#   env        nvidia-smi, nvcc, cmake, g++ versions
#   unpack     dpkg -x every .deps/*.deb into one scratch prefix (no root, no network needed)
#   configure  CUDA on, Release, CMAKE_PREFIX_PATH=<prefix>/usr, DSA_TESTDATA_DIR=$PWD/.testdata
#   build      -j16
#   test-gpu   ctest -L gpu        test-cpu   ctest -L cpu
#   bench      every bench_* with --benchmark_out=$OUT/bench_*.json
#   demo       dsa_demo --device cuda
# Every step runs even when an earlier one failed; each step's exit code and time go into the
# summary table printed last (and $OUT/summary.txt). Logs go to a few files under $OUT (at most 8
# files come back from the machine): summary.txt, env.txt, build.log, tests.log, bench.log,
# demo.txt and the benchmark JSON (tarred into bench_json.tar if there are too many).
#
# Knobs (environment): OUT (default ./device-out), BUILD_DIR (build-device; an absolute path outside
# the tree survives between calls while the machine stays warm), JOBS (16), GPU_TESTS, CPU_TESTS,
# BENCH, DEMO (1 = run the step, default 1 each; a call has 10 minutes, so a full run is often split
# into a test call and a bench call on the same warm machine),
# CUDA_MODE (DSA_ENABLE_CUDA, default ON; OFF only for a dry run of this script without nvcc),
# BENCH_ARGS (default --benchmark_min_time=0.2), BENCH_FILTER, DEMO_ARGS, STEP_TIMEOUT (seconds
# per test/bench/demo step, default 240).
set -u
cd "$(dirname "$0")/.."

OUT="${OUT:-$PWD/device-out}"
BUILD_DIR="${BUILD_DIR:-build-device}"
JOBS="${JOBS:-16}"
BENCH_ARGS="${BENCH_ARGS:---benchmark_min_time=0.2}"
BENCH_FILTER="${BENCH_FILTER:-}"
BENCH_EXES="${BENCH_EXES:-bench_*}"   # which bench executables run (glob), e.g. 'bench_*_cuda'
TORCH_BASELINES="${TORCH_BASELINES:-1}"  # also run bench/torch_baselines.py (ceilings, torch.topk, naive attention)
SANITIZE="${SANITIZE:-1}"               # compute-sanitizer memcheck on a small GPU subset
DEMO_ARGS="${DEMO_ARGS:-}"
STEP_TIMEOUT="${STEP_TIMEOUT:-240}"
GPU_TESTS="${GPU_TESTS:-1}"
CPU_TESTS="${CPU_TESTS:-1}"
BENCH="${BENCH:-1}"
DEMO="${DEMO:-1}"
# The commit: the one a snapshot (scripts/prepare_device.sh) was made from, else git's HEAD.
COMMIT="$(cat .snapshot-commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo '?')"
CUDA_MODE="${CUDA_MODE:-ON}"
mkdir -p "$OUT"
export CXX=/usr/bin/g++
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="$PATH:/usr/local/cuda/bin"
fi

steps=()
codes=()
secs=()
notes=()

# run_step NAME LOGFILE command...   (appends to LOGFILE; records exit code and time)
run_step() {
  local name="$1" log="$2"
  shift 2
  echo "==== ${name}: $*" | tee -a "$log"
  local t0=$(date +%s)
  "$@" >>"$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  echo "==== ${name}: exit ${rc} after ${dt} s" | tee -a "$log"
  steps+=("$name")
  codes+=("$rc")
  secs+=("$dt")
  notes+=("")
  return 0
}
set_note() { notes[$(( ${#notes[@]} - 1 ))]="$1"; }

# ---- env --------------------------------------------------------------------------------------------
env_step() {
  echo "date: $(date -u '+%F %T') UTC"
  echo "commit: ${COMMIT} $(git status --porcelain 2>/dev/null | grep -q . && echo '(dirty)')"
  echo "host: $(uname -a)"
  echo "cores: $(nproc)"
  nvidia-smi || true
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv || true
  nvcc --version || true
  cmake --version | head -n 1 || true
  "$CXX" --version | head -n 1 || true
  command -v ninja >/dev/null && echo "ninja $(ninja --version)"
}
run_step env "$OUT/env.txt" env_step
set_note "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"

# ---- unpack the staged packages ----------------------------------------------------------------------
PREFIX="$(mktemp -d "${TMPDIR:-/tmp}/dsa-deps.XXXXXX")"
unpack_step() {
  local n=0
  for deb in .deps/*.deb; do
    [ -f "$deb" ] || continue
    echo "dpkg -x $deb"
    dpkg -x "$deb" "$PREFIX" || return 1
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { echo "no .deb files in .deps (run scripts/prepare_device.sh and carry .deps)"; return 1; }
}
run_step unpack "$OUT/build.log" unpack_step
set_note "prefix $PREFIX"

# ---- configure + build ---------------------------------------------------------------------------------
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
TESTDATA="$PWD/.testdata"
[ -d "$TESTDATA" ] || echo "WARNING: no .testdata; golden tests will report Skipped" | tee -a "$OUT/build.log"
run_step configure "$OUT/build.log" cmake -S . -B "$BUILD_DIR" "${GEN[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DDSA_ENABLE_CUDA="$CUDA_MODE" -DCMAKE_PREFIX_PATH="$PREFIX/usr" \
  -DDSA_TESTDATA_DIR="$TESTDATA"
run_step build "$OUT/build.log" cmake --build "$BUILD_DIR" -j"$JOBS"
export DSA_TESTDATA_DIR="$TESTDATA"

# ---- tests --------------------------------------------------------------------------------------------
ctest_note() {  # "N passed, M failed, K skipped" from the last ctest block of a log
  local log="$1"
  local line=$(grep -E "tests passed, [0-9]+ tests failed out of" "$log" | tail -n 1)
  local skipped=$(awk '/The following tests did not run/{f=1;next} f&&/^[[:space:]]+[0-9]+ - /{n++} f&&/^$/{f=0} END{print n+0}' "$log")
  echo "${line:-no ctest summary}; skipped ${skipped}"
}
if [ "$GPU_TESTS" = 1 ]; then
  run_step test-gpu "$OUT/tests.log" timeout "$STEP_TIMEOUT" \
    ctest --test-dir "$BUILD_DIR" -L gpu --output-on-failure --no-tests=error --timeout "$STEP_TIMEOUT"
  set_note "$(ctest_note "$OUT/tests.log")"
fi
if [ "$CPU_TESTS" = 1 ]; then
  run_step test-cpu "$OUT/tests.log" timeout "$STEP_TIMEOUT" \
    ctest --test-dir "$BUILD_DIR" -L cpu --output-on-failure -j"$JOBS" --timeout "$STEP_TIMEOUT"
  set_note "$(ctest_note "$OUT/tests.log")"
fi

# ---- benchmarks -----------------------------------------------------------------------------------------
found_bench=0
[ "$BENCH" = 1 ] || found_bench=2
for b in "$BUILD_DIR"/bench/$BENCH_EXES; do
  [ "$BENCH" = 1 ] && [ -x "$b" ] && [ -f "$b" ] || continue
  found_bench=1
  name=$(basename "$b")
  args=(--benchmark_out="$OUT/${name}.json" --benchmark_out_format=json $BENCH_ARGS)
  [ -n "$BENCH_FILTER" ] && args+=(--benchmark_filter="$BENCH_FILTER")
  run_step "$name" "$OUT/bench.log" timeout "$STEP_TIMEOUT" "$b" "${args[@]}"
done
[ "$found_bench" -ne 0 ] || { steps+=(bench); codes+=(1); secs+=(0); notes+=("no bench_* executables built"); }

if [ "$BENCH" = 1 ] && [ "$TORCH_BASELINES" = 1 ]; then
  run_step torch-baselines "$OUT/bench.log" timeout "$STEP_TIMEOUT" python3 bench/torch_baselines.py \
    --json "$OUT/torch_baselines.json"
fi

# ---- compute-sanitizer on small cases ------------------------------------------------------------------
if [ "$SANITIZE" = 1 ] && command -v compute-sanitizer >/dev/null 2>&1; then
  run_step memcheck "$OUT/tests.log" timeout "$STEP_TIMEOUT" compute-sanitizer --tool memcheck --error-exitcode 1 \
    "$BUILD_DIR/tests/dsa_tests_gpu" "[golden]"
  run_step racecheck "$OUT/tests.log" timeout "$STEP_TIMEOUT" compute-sanitizer --tool racecheck --error-exitcode 1 \
    "$BUILD_DIR/tests/dsa_tests_gpu" "gpu topk: ±inf and NaN*"
  # The streaming kernels: the fused indexer → top-k, and the stream top-k kernel.
  run_step memcheck-stream "$OUT/tests.log" timeout "$STEP_TIMEOUT" compute-sanitizer --tool memcheck --error-exitcode 1 \
    "$BUILD_DIR/tests/dsa_tests_gpu" "[sanitize]"
  run_step racecheck-stream "$OUT/tests.log" timeout "$STEP_TIMEOUT" compute-sanitizer --tool racecheck --error-exitcode 1 \
    "$BUILD_DIR/tests/dsa_tests_gpu" "[sanitize]"
  run_step synccheck-stream "$OUT/tests.log" timeout "$STEP_TIMEOUT" compute-sanitizer --tool synccheck --error-exitcode 1 \
    "$BUILD_DIR/tests/dsa_tests_gpu" "[sanitize]"
  run_step racecheck-topk-stream "$OUT/tests.log" env DSA_TOPK_KERNEL=stream timeout "$STEP_TIMEOUT" \
    compute-sanitizer --tool racecheck --error-exitcode 1 "$BUILD_DIR/tests/dsa_tests_gpu" "gpu topk: ±inf and NaN*"
fi

# ---- demo ------------------------------------------------------------------------------------------------
if [ "$DEMO" = 1 ]; then
  run_step demo "$OUT/demo.txt" timeout "$STEP_TIMEOUT" "$BUILD_DIR/examples/demo/dsa_demo" --device cuda $DEMO_ARGS
  set_note "$(grep -E '^total |^dsa_demo: ' "$OUT/demo.txt" 2>/dev/null | tail -n 1)"
fi

# ---- at most 8 files come back: tar the benchmark JSON if needed -------------------------------------------
nfiles=$(find "$OUT" -maxdepth 1 -type f | wc -l)
if [ "$nfiles" -gt 7 ]; then
  (cd "$OUT" && tar cf bench_json.tar bench_*.json && rm -f bench_*.json)
fi
rm -rf "$PREFIX"

# ---- summary ---------------------------------------------------------------------------------------------
{
  echo "dsa device run — $(date -u '+%F %T') UTC — commit ${COMMIT}"
  printf '%-22s %-5s %-7s %s\n' step exit seconds notes
  failed=0
  for i in "${!steps[@]}"; do
    printf '%-22s %-5s %-7s %s\n' "${steps[$i]}" "${codes[$i]}" "${secs[$i]}" "${notes[$i]}"
    [ "${codes[$i]}" -eq 0 ] || failed=$((failed + 1))
  done
  echo "failed steps: ${failed}"
} | tee "$OUT/summary.txt"
