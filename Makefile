# dsa — the newcomer's entry points. Everything is plain CMake underneath (see docs/building.md).
#
#   make demo        install missing Debian packages (as root), configure, build, run the demo
#   make test        same set-up, then every test this machine can run (ctest)
#   make build       configure + build only
#   make bench       build, then run the benchmarks (JSON next to the build)
#   make test-asan   CPU-only ASan+UBSan build in $(ASAN_DIR), ctest -L cpu
#   make clean       remove both build directories
#
# Knobs: BUILD_DIR, ASAN_DIR, JOBS, CMAKE_ARGS (extra -D flags), DEMO_ARGS, BENCH_ARGS, CTEST_ARGS.

BUILD_DIR  ?= build
ASAN_DIR   ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
DEMO_ARGS  ?=
BENCH_ARGS ?=
CTEST_ARGS ?=
# Tests that cannot run under ASan: an uninstrumented host process (the Python interpreter) cannot
# load an ASan-instrumented libdsa.so ("ASan runtime does not come first in initial library list").
ASAN_EXCLUDE ?= ^example_python_ctypes$$

CCACHE := $(shell command -v ccache 2>/dev/null)
ifneq ($(CCACHE),)
LAUNCHER := -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache \
            -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache
endif

CMAKE_COMMON := -G Ninja $(LAUNCHER) --no-warn-unused-cli
# Golden test data: ../shared/testdata beside the clone by default; DSA_TESTDATA_DIR (environment)
# points elsewhere, at configure time here and at test time in the tests themselves.
ifneq ($(DSA_TESTDATA_DIR),)
CMAKE_COMMON += -DDSA_TESTDATA_DIR=$(DSA_TESTDATA_DIR)
endif

.PHONY: all deps configure build demo test bench test-asan clean help

all: build

help:
	@sed -n '2,10p' Makefile

deps:
	@./scripts/install_deps.sh

# Configure once; afterwards ninja re-runs CMake by itself whenever a CMakeLists.txt changes.
configure: deps
	@if [ ! -f "$(BUILD_DIR)/build.ninja" ]; then \
	  echo "== configure $(BUILD_DIR) (Release; CUDA auto-detected)"; \
	  cmake -S . -B "$(BUILD_DIR)" $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) || exit 1; \
	fi

build: configure
	@echo "== build $(BUILD_DIR) (-j$(JOBS))"
	cmake --build "$(BUILD_DIR)" -j$(JOBS)

demo: configure
	cmake --build "$(BUILD_DIR)" -j$(JOBS) --target dsa_demo dsa_warmup
	@echo "== demo: one DSA layer on the default problem (flags: $(BUILD_DIR)/examples/demo/dsa_demo --help)"
	"$(BUILD_DIR)/examples/demo/dsa_demo" $(DEMO_ARGS)
	@echo "== training: indexer warm-up (dense KL) then sparse stage, Adam on the library's loss and gradients"
	"$(BUILD_DIR)/examples/warmup/dsa_warmup" --quiet

test: build
	@echo "== ctest $(BUILD_DIR) (cpu tests; gpu tests report Skipped without a CUDA device)"
	ctest --test-dir "$(BUILD_DIR)" --output-on-failure -j$(JOBS) $(CTEST_ARGS)

bench: build
	@set -e; for b in "$(BUILD_DIR)"/bench/bench_*; do \
	  [ -f "$$b" ] && [ -x "$$b" ] || continue; n=$$(basename "$$b"); \
	  echo "== $$n (JSON: $(BUILD_DIR)/$$n.json)"; \
	  "$$b" --benchmark_out="$(BUILD_DIR)/$$n.json" --benchmark_out_format=json $(BENCH_ARGS); \
	done

test-asan: deps
	@if [ ! -f "$(ASAN_DIR)/build.ninja" ]; then \
	  echo "== configure $(ASAN_DIR) (ASan+UBSan, CPU only)"; \
	  cmake -S . -B "$(ASAN_DIR)" $(CMAKE_COMMON) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DDSA_SANITIZE=ON -DDSA_ENABLE_CUDA=OFF -DDSA_BUILD_BENCH=OFF $(CMAKE_ARGS) || exit 1; \
	fi
	cmake --build "$(ASAN_DIR)" -j$(JOBS)
	ASAN_OPTIONS=abort_on_error=0:detect_stack_use_after_return=1:strict_string_checks=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir "$(ASAN_DIR)" -L cpu --output-on-failure -j$(JOBS) -E "$(ASAN_EXCLUDE)" $(CTEST_ARGS)

clean:
	rm -rf "$(BUILD_DIR)" "$(ASAN_DIR)"
