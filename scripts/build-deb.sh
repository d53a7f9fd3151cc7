#!/usr/bin/env bash
# Builds ubroker's binary Debian packages from this source tree into build/deb/, then checks
# them with lintian. Run as `bash scripts/build-deb.sh` (or `bash scripts/dev.sh deb`).
#
# - Packages: ubroker, libubroker0, libubroker-dev, ubroker-nats-bridge (and their -dbgsym debug symbols), with
#   the .buildinfo, the .changes and the build log (*.build); the packaging is in debian/.
# - The build runs `dpkg-buildpackage -b -us -uc` (binary only, unsigned) in a copy of the
#   tree in build/deb-work/ (the files git knows: tracked ones, and untracked ones that are
#   not ignored), so the source tree itself stays clean. The copy is removed after a good
#   build; it is kept after a failure (or with UBROKER_DEB_KEEP=1) to look at.
# - Missing build dependencies (Build-Depends in debian/control) and lintian are installed
#   with apt-get, Debian packages by name only; nothing else is downloaded. That needs root
#   or sudo; with everything installed, no privileges are needed.
# - Fails when the build fails or lintian reports an error; its warnings are printed.
# - DEB_BUILD_OPTIONS is passed on; without a parallel=N in it, the build uses every core.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out_dir=$here/build/deb
work_dir=$here/build/deb-work

say() { echo "build-deb.sh: $*"; }
die() {
  echo "build-deb.sh: error: $*" >&2
  exit 1
}

for f in debian/control debian/changelog debian/rules; do
  [ -f "$here/$f" ] || die "no $f in $here"
done
for c in dpkg apt-get; do
  command -v "$c" >/dev/null || die "this needs a Debian system (no $c)"
done

sudo=()
apt_updated=0
# as_root COMMAND...: runs COMMAND as root, through sudo when not root.
as_root() {
  if [ "$(id -u)" -ne 0 ] && [ ${#sudo[@]} -eq 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to run: $*"
    sudo=(sudo)
  fi
  "${sudo[@]}" "$@"
}
# apt_get ARGS...: apt-get, non-interactive, after one `apt-get update` per run; waits up to
# 5 minutes for dpkg's lock when another apt-get is running.
apt_get() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update -q
    apt_updated=1
  fi
  as_root apt-get -q -o DPkg::Lock::Timeout=300 "$@"
}
# install_missing PACKAGE...: installs those of the named Debian packages not installed yet.
install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing missing Debian packages: ${missing[*]}"
  apt_get install -y --no-install-recommends "${missing[@]}"
}

# dpkg-dev: dpkg-buildpackage, dpkg-checkbuilddeps, dpkg-parsechangelog.
install_missing dpkg-dev

source_name=$(dpkg-parsechangelog -l "$here/debian/changelog" -S Source)
version=$(dpkg-parsechangelog -l "$here/debian/changelog" -S Version)
version_no_epoch=${version#*:}
# A native build: the host architecture is this machine's.
arch=$(dpkg --print-architecture)
# The tree is named as dpkg-source would unpack it: SOURCE-UPSTREAMVERSION.
src_dir=$work_dir/$source_name-${version_no_epoch%-*}
say "building $source_name $version for $arch"

# Results of an earlier run are removed first: what build/deb holds afterwards is this run's.
mkdir -p "$out_dir"
rm -f "$out_dir"/*.deb "$out_dir"/*.ddeb "$out_dir"/*.buildinfo "$out_dir"/*.changes "$out_dir"/*.build
rm -rf "$work_dir"
mkdir -p "$src_dir"

# The copy: with git, the files it knows as they are now in the work tree (tracked ones,
# deleted ones skipped, and untracked ones that are not ignored, such as new sources);
# without git, everything but build output and caches.
say "copying the source tree to ${src_dir#"$here"/}"
if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (
    cd "$here"
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do
        case "$f" in build/* | out/* | .cache/*) continue ;; esac
        if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
      done |
      tar --null --no-recursion -T - -cf -
  ) | tar -xf - -C "$src_dir"
else
  tar -C "$here" --exclude=./build --exclude=./out --exclude=./.cache --exclude=./.git \
    --exclude=./compile_commands.json -cf - . | tar -xf - -C "$src_dir"
fi
chmod +x "$src_dir/debian/rules"

# Build dependencies: apt-get build-dep reads them from debian/control (with build-essential).
if ! (cd "$src_dir" && dpkg-checkbuilddeps) 2>/dev/null; then
  say "installing the build dependencies named in debian/control"
  apt_get build-dep -y --no-install-recommends "$src_dir"
  (cd "$src_dir" && dpkg-checkbuilddeps) || die "build dependencies still unmet (above)"
fi

case " ${DEB_BUILD_OPTIONS:-} " in
  *" parallel="*) ;;
  *)
    jobs=$(nproc 2>/dev/null || echo 1)
    export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:+$DEB_BUILD_OPTIONS }parallel=$jobs"
    ;;
esac

build_log=$out_dir/${source_name}_${version_no_epoch}_$arch.build
say "dpkg-buildpackage -b -us -uc (DEB_BUILD_OPTIONS=$DEB_BUILD_OPTIONS); log: ${build_log#"$here"/}"
if ! (cd "$src_dir" && dpkg-buildpackage -b -us -uc) 2>&1 | tee "$build_log"; then
  die "dpkg-buildpackage failed (log: $build_log; the build tree is kept in $work_dir)"
fi

# dpkg-buildpackage writes the results beside the tree, into the work directory.
shopt -s nullglob
results=("$work_dir"/*.deb "$work_dir"/*.ddeb "$work_dir"/*.buildinfo "$work_dir"/*.changes)
shopt -u nullglob
[ ${#results[@]} -gt 0 ] || die "dpkg-buildpackage left no packages in $work_dir"
mv -f "${results[@]}" "$out_dir"/
changes=$out_dir/${source_name}_${version_no_epoch}_$arch.changes
[ -f "$changes" ] || die "no $changes after the build"

if [ "${UBROKER_DEB_KEEP:-0}" = 1 ]; then
  say "keeping the build tree in $work_dir (UBROKER_DEB_KEEP=1)"
else
  rm -rf "$work_dir"
fi

install_missing lintian
say "lintian ${changes#"$here"/} (fails on errors; warnings are printed)"
lintian_rc=0
lintian --fail-on error "$changes" || lintian_rc=$?
[ "$lintian_rc" -eq 0 ] || die "lintian reported errors (E: above) or failed (exit $lintian_rc)"

say "packages in ${out_dir#"$here"/}:"
for deb in "$out_dir"/*.deb; do
  printf '  %-45s %8s KiB\n' "$(basename "$deb")" "$(($(stat -c %s "$deb") / 1024))"
done
