#!/usr/bin/env bash
# The project's one entry point on a Debian 12 machine (the README's two commands):
#   bash scripts/dev.sh run    install what is missing, build Release, run brokerd in the foreground
#   bash scripts/dev.sh test   install what is missing, build, run the whole test suite under
#                              AddressSanitizer+UBSan, the soak test for $UBROKER_SOAK_SECONDS
#                              (default 90) against the Release brokerd (beside the ASan build;
#                              30 s under ASan), the multithreaded client and shared-memory tests
#                              under ThreadSanitizer, then each libFuzzer target for
#                              $UBROKER_FUZZ_SECONDS (default 60).
#                              The Release build is also installed into a temporary prefix
#                              and used by out-of-tree C++ and C programs (find_package,
#                              pkg-config).
#   bash scripts/dev.sh fuzz [SECONDS]   only the libFuzzer targets (clang 16, ASan+UBSan)
#   bash scripts/dev.sh deb    the Debian packages (ubroker, libubroker0, libubroker-dev) into
#                              build/deb/, checked with lintian (scripts/build-deb.sh)
# Extra arguments after `run` go to brokerd (e.g. `run -- --socket /tmp/b.sock`).
# Installs only Debian packages by name (apt-get); downloads nothing else.
set -euo pipefail
# Lets ccache cache files built with precompiled headers.
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${UBROKER_BUILD_DIR:-$here/build/release}
asan_dir=$here/build/asan
tsan_dir=$here/build/tsan
fuzz_dir=$here/build/fuzz
fuzz_targets=(fuzz_frame_decoder fuzz_handshake fuzz_header_messages)

packages=(
  g++ cmake ninja-build ccache pkg-config
  libasio-dev libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev libcli11-dev libtomlplusplus-dev
  libgtest-dev libgmock-dev
  libsystemd-dev scdoc
  systemd  # systemd-socket-activate, for the socket activation test
  jq       # the brokerctl tests check its --json output as an operator's scripts would
  libnats-dev nats-server  # ubroker-nats-bridge, and the NATS cluster its tests start
)
# libstdc++'s <expected> and libFuzzer need clang 16 (Debian 12 has it; clang 14 is too old).
fuzz_packages=(clang-16 libclang-rt-16-dev)

usage() {
  sed -n '2,/^# Extra arguments/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# install_missing PACKAGE...: apt-get installs those not installed yet.
install_missing() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "dev.sh: installing missing Debian packages: ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "dev.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# configure DIR BUILD_TYPE [cmake args...]
configure() {
  local dir=$1 type=$2
  shift 2
  local launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S "$here" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" \
    -DUBROKER_WERROR=ON "${launcher[@]}" "$@" >/dev/null
}

# Sanitizer builds keep line tables only (-g1): reports still name every frame's file and
# line, and the ASan build takes 4 min instead of 4.6 on two cores.
line_tables_only=(-DCMAKE_CXX_FLAGS_DEBUG=-g1)

# show_failures LOG: repeats a failed run's assertion and sanitizer messages at the very end,
# where a log cut to its last lines (as CI shows it) still has them.
show_failures() {
  echo "== what failed, repeated from $1:"
  grep -E -A12 ': Failure$|install_test: FAILED|ERROR: [A-Za-z]+Sanitizer|runtime error:|WARNING: ThreadSanitizer' "$1" | head -n 120 || true
}

# run_suite DIR: builds everything in DIR and runs its tests.
run_suite() {
  cmake --build "$1" -j "$jobs"
  (cd "$1" && ctest --output-on-failure --timeout 300 -j "$jobs" 2>&1 | tee ctest.log) || {
    show_failures "$1/ctest.log"
    exit 1
  }
}

# run_tsan: the client library and shared-memory tests under ThreadSanitizer, against the
# Release build's brokerd and peers (tests/CMakeLists.txt says why).
run_tsan() {
  configure "$tsan_dir" Debug -DUBROKER_SANITIZE=thread -DUBROKER_TEST_TOOLS_DIR="$build_dir" "${line_tables_only[@]}"
  cmake --build "$tsan_dir" -j "$jobs" --target shm_test client_threads_test
  (cd "$tsan_dir" && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --output-on-failure --timeout 300 -j "$jobs" 2>&1 | tee ctest.log) || {
    show_failures "$tsan_dir/ctest.log"
    exit 1
  }
}

# run_fuzzers SECONDS: builds the libFuzzer targets and runs them side by side for SECONDS
# each, from the seed corpus in fuzz/corpus (new inputs go to a scratch directory). A crash,
# sanitizer report, leak or hang fails the run; the report and reproducer are printed.
run_fuzzers() {
  # -O1 without debug info: the targets build in half the time and still find what -O2 does.
  configure "$fuzz_dir" None -DCMAKE_CXX_COMPILER=clang++-16 -DCMAKE_CXX_FLAGS=-O1 -DUBROKER_FUZZ=ON \
    -DUBROKER_TESTS=OFF
  cmake --build "$fuzz_dir" -j "$jobs" --target "${fuzz_targets[@]}"
  local scratch pids=() failed=0
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' RETURN
  for t in "${fuzz_targets[@]}"; do
    mkdir -p "$scratch/$t"
    (cd "$scratch" && exec "$fuzz_dir/fuzz/$t" -max_total_time="$1" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 "$scratch/$t" "$here/fuzz/corpus/$t" >"$scratch/$t.log" 2>&1) &
    pids+=($!)
  done
  for i in "${!fuzz_targets[@]}"; do
    local t=${fuzz_targets[$i]}
    if wait "${pids[$i]}"; then
      echo "-- $t, $1 s: $(grep -E '^Done' "$scratch/$t.log")"
    else
      tail -n 60 "$scratch/$t.log"
      cp "$scratch"/crash-* "$scratch"/leak-* "$scratch"/timeout-* . 2>/dev/null || true
      echo "dev.sh: $t found a problem (its report is above; reproducer copied here)" >&2
      failed=1
    fi
  done
  [ "$failed" -eq 0 ] || exit 1
}

jobs=$(nproc 2>/dev/null || echo 2)

case "${1:-}" in
  run)
    shift
    [ "${1:-}" = "--" ] && shift
    install_missing "${packages[@]}"
    configure "$build_dir" Release
    cmake --build "$build_dir" --target brokerd -j "$jobs"
    exec "$build_dir/broker/brokerd" "$@"
    ;;
  test)
    install_missing "${packages[@]}" "${fuzz_packages[@]}"
    # The whole suite runs under ASan+UBSan; the Release build is the product, the tools and
    # the soak, which takes minutes of mostly waiting and runs beside the ASan build.
    echo "== Release build (at ${SECONDS} s)"
    configure "$build_dir" Release
    cmake --build "$build_dir" -j "$jobs" --target ubroker_installed ubroker-publish \
      ubroker-subscribe ubroker_test_peer ubroker_hostile soak_test
    (cd "$build_dir" && UBROKER_SOAK_SECONDS=${UBROKER_SOAK_SECONDS:-90} \
      ctest --verbose --timeout 3900 -R '^Soak\.') >"$build_dir/soak.log" 2>&1 &
    soak_pid=$!
    trap 'kill "$soak_pid" 2>/dev/null || true' EXIT  # a failure below must not leave it running
    echo "== AddressSanitizer+UBSan build and tests (the Release soak runs beside them) (at ${SECONDS} s)"
    configure "$asan_dir" Debug -DUBROKER_SANITIZE=address "${line_tables_only[@]}"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      UBROKER_SOAK_SECONDS=30 run_suite "$asan_dir"
    echo "== Release soak (at ${SECONDS} s)"
    wait "$soak_pid" || {
      cat "$build_dir/soak.log"
      show_failures "$build_dir/soak.log"
      echo "dev.sh: the soak failed" >&2
      exit 1
    }
    grep -E 'soak:|tests passed' "$build_dir/soak.log"
    echo "== Install into a temporary prefix; out-of-tree C++ and C programs use it (at ${SECONDS} s)"
    (cd "$build_dir" && ctest --output-on-failure --timeout 600 -R '^Install\.' 2>&1 | tee install.log) || {
      show_failures "$build_dir/install.log"
      exit 1
    }
    echo "== ThreadSanitizer build: client library and shared memory (at ${SECONDS} s)"
    run_tsan
    echo "== libFuzzer targets (clang, ASan+UBSan) (at ${SECONDS} s)"
    run_fuzzers "${UBROKER_FUZZ_SECONDS:-60}"
    echo "== all passed in ${SECONDS} s"
    ;;
  fuzz)
    install_missing "${packages[@]}" "${fuzz_packages[@]}"
    run_fuzzers "${2:-60}"
    ;;
  deb)
    exec bash "$here/scripts/build-deb.sh"
    ;;
  -h|--help|help)
    usage
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac
