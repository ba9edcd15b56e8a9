# dengbao: the top-level driver. CMake does the building; this file gives the fixed verbs.
#   make          release build: build/dengbao and build/libdengbao.a
#   make test     every unit and integration test (ctest)
#   make asan     the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz     each libFuzzer target for FUZZ_SECONDS (default 30) over its corpus
#   make bench    the benchmarks, each against its anchor in the same run
#   make run      the gateway with embedded defaults in ./var (see README.md)
#   make format   clang-format every C file
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 30
CMAKE ?= cmake

.PHONY: all deps build test asan fuzz bench run format clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
	@$(CMAKE) --build build -j $(JOBS)

test: build
	@cd build && ctest --output-on-failure -j $(JOBS)

asan: deps
	@$(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
		-DDBAO_SANITIZE=ON >/dev/null
	@$(CMAKE) --build build-asan -j $(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

fuzz: deps
	@$(CMAKE) -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
		-DDBAO_FUZZ=ON >/dev/null
	@$(CMAKE) --build build-fuzz -j $(JOBS)
	@scripts/fuzz.sh build-fuzz $(FUZZ_SECONDS)

bench: build
	@scripts/bench.sh build

run: build
	@build/dengbao gm selftest && build/dengbao gateway --demo --dir var/gateway

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz
