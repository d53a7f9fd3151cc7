#!/usr/bin/env bash
# Install and integrate: installs a build into a temporary prefix and uses it the way an
# application outside this tree does.
#   1. the prefix holds exactly the public headers, libubroker.so.0 (SONAME, only ubroker
#      symbols exported), libubroker.a, the CMake package, ubroker.pc, the binaries, the man
#      pages, the units, the example config and the bash completion;
#   2. each public header compiles on its own with nothing but the prefix on the include path
#      (C++20 and C++23; the C header as C11), so it needs no Asio, protobuf, fmt or internals;
#   3. an out-of-tree C++ project (tests/install/consumer) configures with find_package and
#      runs against the prefix's brokerd: as C++20 and C++23 with the shared library, and as
#      C++20 with the static one;
#   4. the C demo (examples/c_demo.c) builds with pkg-config, shared and static, and runs.
# Each program checks publish/subscribe, request/reply and NO_RESPONDERS for an unserved topic.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
work=$(mktemp -d /tmp/ubroker-install.XXXXXX)
prefix=$work/prefix
broker_pid=
cleanup() {
  if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "install_test: FAILED: $*" >&2; exit 1; }
step() { echo "== $*"; }

step "cmake --install into $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
libdir=$prefix/lib
[ -d "$libdir/cmake/ubroker" ] || libdir=$(dirname "$(find "$prefix" -name ubrokerConfig.cmake | head -n1)")/../..
libdir=$(cd "$libdir" && pwd)

step "installed files"
expected_headers="client.hpp error.hpp export.h message.hpp result.hpp ubroker.h unique_fd.hpp"
actual_headers=$(cd "$prefix/include/ubroker" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' ' | sed 's/ $//')
[ "$actual_headers" = "$expected_headers" ] || fail "public headers are '$actual_headers', expected '$expected_headers'"
for f in "$libdir/libubroker.so.0" "$libdir/libubroker.so" "$libdir/libubroker.a" \
  "$libdir/cmake/ubroker/ubrokerConfig.cmake" "$libdir/cmake/ubroker/ubrokerConfigVersion.cmake" \
  "$libdir/pkgconfig/ubroker.pc" "$prefix/bin/brokerd" "$prefix/bin/brokerctl" "$prefix/bin/brokerbench" \
  "$prefix/share/man/man8/brokerd.8" "$prefix/share/man/man1/brokerctl.1" "$prefix/share/man/man1/brokerbench.1" \
  "$prefix/share/man/man5/ubroker.toml.5" "$prefix/share/man/man7/ubroker.7" \
  "$prefix/share/bash-completion/completions/brokerctl" "$prefix/etc/ubroker/ubroker.toml" \
  "$prefix/lib/systemd/system/ubroker.service" "$prefix/lib/systemd/system/ubroker.socket"; do
  [ -e "$f" ] || fail "missing $f"
done
soname=$(readelf -d "$libdir/libubroker.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = "libubroker.so.0" ] || fail "SONAME is '$soname'"
others=$(nm -D --defined-only "$libdir/libubroker.so" | awk '{print $3}' | c++filt | grep -v -E '^(ubroker_|ubroker::)' || true)
[ -z "$others" ] || fail "libubroker.so exports more than the API: $(echo "$others" | head -n5)"
echo "SONAME $soname; $(nm -D --defined-only "$libdir/libubroker.so" | grep -c ' T ') functions exported, all ubroker_* or ubroker::*"

step "each public header compiles alone (only the prefix on the include path)"
for h in "$prefix"/include/ubroker/*.hpp; do
  for std in c++20 c++23; do
    echo "#include <ubroker/$(basename "$h")>" | c++ -std=$std -Wall -Wextra -Wpedantic -Werror -fsyntax-only \
      -I"$prefix/include" -x c++ - || fail "$(basename "$h") does not compile alone as $std"
  done
done
if command -v clang++-16 >/dev/null; then  # clang with libstdc++: the C++20 form of Result
  for h in "$prefix"/include/ubroker/*.hpp; do
    echo "#include <ubroker/$(basename "$h")>" | clang++-16 -std=c++20 -Wall -Wextra -Wpedantic -Werror -fsyntax-only \
      -I"$prefix/include" -x c++ - || fail "$(basename "$h") does not compile alone with clang++-16 -std=c++20"
  done
fi
echo '#include <ubroker/ubroker.h>' | cc -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$prefix/include" -x c - ||
  fail "ubroker.h does not compile alone as C11"
# Nothing but the standard library and each other:
if grep -h '^#include' "$prefix"/include/ubroker/* | grep -v -E '^#include "ubroker/[a-z_]+\.(h|hpp)"$' |
  grep -v -E '^#include <[a-z_]+(\.h)?>$' | grep .; then
  fail "a public header includes something else"
fi
if grep -h '^#include <' "$prefix"/include/ubroker/* | grep -E 'asio|protobuf|spdlog|fmt|toml|CLI'; then
  fail "a public header includes a dependency"
fi

step "brokerd from the prefix"
sock=$work/broker.sock
"$prefix/bin/brokerd" --socket "$sock" --log-level warn &
broker_pid=$!

export PATH="$prefix/bin:$PATH"
consumer() {  # NAME CMAKE_ARGS...: configures, builds and runs the out-of-tree C++ project
  local name=$1
  shift
  step "out-of-tree C++ project, find_package(ubroker): $name"
  cmake -S "$src/tests/install/consumer" -B "$work/$name" -DCMAKE_PREFIX_PATH="$prefix" "$@" >"$work/$name.log" 2>&1 ||
    { cat "$work/$name.log"; fail "configure $name"; }
  cmake --build "$work/$name" >>"$work/$name.log" 2>&1 || { cat "$work/$name.log"; fail "build $name"; }
  "$work/$name/consumer" "$sock" || fail "run $name"
}
consumer cxx20-shared -DCONSUMER_CXX_STANDARD=20
consumer cxx23-shared -DCONSUMER_CXX_STANDARD=23
consumer cxx20-static -DCONSUMER_CXX_STANDARD=20 -DUBROKER_USE_STATIC_LIBS=ON
# ldd's output is taken whole before it is searched: `ldd | grep -q` under pipefail fails
# when grep exits at its match and ldd, still writing, dies of SIGPIPE.
libs=$(ldd "$work/cxx20-shared/consumer")
grep -q "libubroker.so.0 => $libdir/" <<<"$libs" || fail "the shared consumer does not load the prefix's libubroker.so.0"
libs=$(ldd "$work/cxx20-static/consumer")
if grep -q libubroker <<<"$libs"; then fail "the static consumer loads libubroker.so"; fi

export PKG_CONFIG_PATH="$libdir/pkgconfig"
step "C11 program with pkg-config (shared): $(pkg-config --cflags --libs ubroker)"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror "$src/examples/c_demo.c" -o "$work/c-demo" $(pkg-config --cflags --libs ubroker) \
  -Wl,-rpath,"$libdir" || fail "build the C demo"
"$work/c-demo" "$sock" || fail "run the C demo"
static_libs=$(pkg-config --static --libs ubroker | sed 's/-lubroker\b/-l:libubroker.a/')
step "C11 program with pkg-config --static: $static_libs"
# shellcheck disable=SC2046,SC2086
cc -std=c11 -Wall -Wextra -Werror "$src/examples/c_demo.c" -o "$work/c-demo-static" $(pkg-config --cflags ubroker) \
  $static_libs || fail "build the static C demo"
libs=$(ldd "$work/c-demo-static")
if grep -q libubroker <<<"$libs"; then fail "the static C demo loads libubroker.so"; fi
"$work/c-demo-static" "$sock" || fail "run the static C demo"

kill -TERM "$broker_pid"
wait "$broker_pid" || fail "brokerd exited with status $? on SIGTERM"
broker_pid=
echo "install_test: 1 passed, 0 failed"
