#!/usr/bin/env bash
# The libraries that Tessera's CUDA build, tests and benchmarks need and that a CUDA/PyTorch
# machine image lacks (oneDNN, fmt, toml++, nlohmann-json, CLI11, GoogleTest, Google Benchmark,
# zlib's headers), as Debian 12 .deb files in .gpu-deps/ at the repository root. A GPU machine
# that reaches no package registry gets them by carrying that folder (device tool: carry
# [".gpu-deps"]); scripts/gpu_check.sh unpacks them there and points CMake at the prefix.
#
#   scripts/gpu_deps.sh [fetch]        # here (Debian 12 + its registry): (re)fill .gpu-deps/
#   scripts/gpu_deps.sh unpack DIR     # there: unpack .gpu-deps/*.deb into DIR (prefix DIR/usr),
#                                      # compare the bundle's needs with the system's libstdc++
#                                      # and glibc, print "prefix=DIR/usr" and "libdir=..." last
#
# Not in the bundle: MPI (one GPU needs none: gpu_check.sh configures -DTESSERA_WITH_MPI=OFF
# without mpicxx), NCCL (the image's pip package nvidia-nccl-cu13 has it), the C++ compiler and
# its runtime (libstdc++, libgomp: nvcc needs the image's own g++, and its libstdc++ is newer than
# Debian 12's on a current image; `unpack` warns when it is not: NEEDS.txt holds what the
# bundle's libraries need).
set -euo pipefail

cd "$(dirname "$0")/.."
BUNDLE=$(realpath -m "${GPU_DEPS_BUNDLE:-.gpu-deps}")
MAX_MIB=${MAX_MIB:-32}  # the device tool carries 64 MiB in all, working tree included

PACKAGES=(
  libdnnl-dev libdnnl2  # oneDNN: headers, libdnnl.so.2
  ocl-icd-libopencl1    # libOpenCL.so.1: Debian's libdnnl.so.2 links it (its OpenCL GPU runtime)
  libfmt-dev libfmt9
  libtomlplusplus-dev libtomlplusplus3
  nlohmann-json3-dev  # header-only
  libcli11-dev        # header-only
  libgtest-dev        # static libgtest.a, libgtest_main.a (GMock is not used, its config is optional)
  libbenchmark-dev libbenchmark1debian
  zlib1g-dev zlib1g  # zlib.h; zlib1g so that libz.so (an absolute link) has a target in the prefix
)

die() {
  echo "gpu_deps: $*" >&2
  exit 1
}

fetch() {
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null ||
    die "apt-get/dpkg-deb not found: fetch on a Debian 12 machine"
  local ID="" VERSION_ID="" PRETTY_NAME=""
  . /etc/os-release
  [[ "$ID" == debian && "$VERSION_ID" == 12 ]] ||
    echo "gpu_deps: warning: this is ${PRETTY_NAME:-an unknown system}, not Debian 12 (what" \
      "gpu_check.sh was tried with); NEEDS.txt is measured on what is fetched all the same"
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"

  # An empty or stale package list has no candidate to download.
  local policy
  policy=$(apt-cache policy "${PACKAGES[@]}" 2>/dev/null || true)
  if [[ $(grep -c 'Candidate: [0-9]' <<<"$policy") -lt ${#PACKAGES[@]} ]]; then
    echo "gpu_deps: apt-get update"
    $sudo apt-get update -qq
  fi

  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT  # (global: the trap runs after fetch returns)
  chmod 777 "$tmp"  # apt's sandbox user writes the downloads
  (cd "$tmp" && apt-get download -q "${PACKAGES[@]}")
  local p f name
  for p in "${PACKAGES[@]}"; do
    compgen -G "$tmp/${p}_*.deb" >/dev/null || die "apt-get download fetched no .deb for $p"
  done

  rm -rf "$BUNDLE"
  mkdir -p "$BUNDLE"
  # Plain file names ('%3a' is the epoch's ':'), which the device tool copies as they are.
  for f in "$tmp"/*.deb; do
    name=$(basename "$f" | sed 's/%3a/_/g; s/[^A-Za-z0-9._+-]/_/g')
    mv "$f" "$BUNDLE/$name"
  done

  # The highest symbol versions the bundle's shared libraries need from the system, so that
  # `unpack` can compare them with the image's libstdc++ and glibc before a long build.
  mkdir -p "$tmp/x"
  for f in "$BUNDLE"/*.deb; do dpkg-deb -x "$f" "$tmp/x"; done
  local symbols kind
  symbols=$(find "$tmp/x" -type f -name '*.so*' -print0 | xargs -0 objdump -T)
  {
    echo "# Highest symbol versions the bundle's shared libraries need (scripts/gpu_deps.sh)"
    for kind in GLIBC GLIBCXX CXXABI; do
      grep -oE "\b${kind}_[0-9][0-9.]*\b" <<<"$symbols" | sort -u -V | tail -1
    done
  } >"$BUNDLE/NEEDS.txt"
  {
    echo "# Debian packages in this bundle (scripts/gpu_deps.sh, $(date -u +%Y-%m-%d))"
    for f in "$BUNDLE"/*.deb; do
      dpkg-deb -f "$f" Package Version | paste -sd' ' | sed 's/^Package: //; s/ Version: / /'
    done
  } >"$BUNDLE/MANIFEST.txt"

  cat "$BUNDLE/MANIFEST.txt" "$BUNDLE/NEEDS.txt"
  local kib
  kib=$(du -sk "$BUNDLE" | cut -f1)
  echo "gpu_deps: $(ls "$BUNDLE"/*.deb | wc -l) packages, $((kib / 1024)).$((kib % 1024 * 10 / 1024))" \
    "MiB in $BUNDLE"
  ((kib < MAX_MIB * 1024)) || die "the bundle is over ${MAX_MIB} MiB: too large to carry"
}

# One .deb into $2: dpkg-deb where there is one; else ar + tar (GNU tar runs xz or zstd itself);
# else Python's tarfile, which reads .xz (Debian 12's data.tar.xz) with no program besides.
# GPU_DEPS_UNPACKER=dpkg-deb|ar|python forces one (to try each here).
unpack_one() {
  local deb=$1 dest=$2 how=${GPU_DEPS_UNPACKER:-}
  if [[ -z "$how" || "$how" == dpkg-deb ]] && command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$deb" "$dest" && UNPACKED_WITH=dpkg-deb && return 0
  fi
  if [[ -z "$how" || "$how" == ar ]] && command -v ar >/dev/null && command -v tar >/dev/null; then
    local tmp
    tmp=$(mktemp -d)
    if (cd "$tmp" && ar x "$deb" && tar -xf data.tar.* -C "$dest") 2>"$tmp.err"; then
      rm -rf "$tmp" "$tmp.err"
      UNPACKED_WITH="ar + tar"
      return 0
    fi
    echo "gpu_deps: ar + tar could not unpack $(basename "$deb") ($(head -1 "$tmp.err")); trying python3"
    rm -rf "$tmp" "$tmp.err"
  fi
  command -v python3 >/dev/null || die "cannot unpack $deb: no dpkg-deb, ar + tar, or python3"
  python3 - "$deb" "$dest" <<'EOF'
import io, subprocess, sys, tarfile

deb, dest = sys.argv[1], sys.argv[2]
data = open(deb, "rb").read()
if data[:8] != b"!<arch>\n":
    sys.exit(f"{deb}: not an ar archive")
pos = 8
while pos + 60 <= len(data):  # ar members: a 60-byte header, the body, padding to even
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58].decode())
    body = data[pos + 60:pos + 60 + size]
    pos += 60 + size + (size & 1)
    if not name.startswith("data.tar"):
        continue
    if name.endswith(".zst"):  # tarfile reads zstd only from Python 3.14
        body = subprocess.run(["zstd", "-dc"], input=body, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
        # Debian's packages hold absolute symbolic links (libz.so): trusted, unpacked as they are.
        if hasattr(tarfile, "fully_trusted_filter"):
            tar.extractall(dest, filter="fully_trusted")
        else:
            tar.extractall(dest)
    sys.exit(0)
sys.exit(f"{deb}: no data.tar member")
EOF
  UNPACKED_WITH=python3
}

# Prints "ok", "OLDER" or "unknown" for each of NEEDS.txt's versions against this system.
check_needs() {
  local needs=$BUNDLE/NEEDS.txt cxx=${CXX:-$(command -v g++ || command -v c++ || true)}
  [[ -f "$needs" ]] || {
    echo "no $needs: the system's libstdc++ and glibc were not compared with the bundle"
    return 0
  }
  local libstdcxx="" glibc="" line kind version have
  [[ -n "$cxx" ]] && libstdcxx=$("$cxx" -print-file-name=libstdc++.so.6 2>/dev/null || true)
  [[ "$libstdcxx" == /* && -e "$libstdcxx" ]] ||
    libstdcxx=$( (ldconfig -p 2>/dev/null || true) | awk '/libstdc\+\+\.so\.6 .*x86-64/ { print $NF; exit }')
  glibc=$( (getconf GNU_LIBC_VERSION 2>/dev/null || true) | awk '{ print $2 }')
  while read -r line; do
    [[ "$line" =~ ^(GLIBC|GLIBCXX|CXXABI)_([0-9.]+)$ ]] || continue
    kind=${BASH_REMATCH[1]} version=${BASH_REMATCH[2]}
    if [[ "$kind" == GLIBC ]]; then
      if [[ -z "$glibc" ]]; then
        echo "warning: could not read glibc's version (getconf): the bundle needs $line"
      elif [[ $(printf '%s\n' "$version" "$glibc" | sort -V | head -1) == "$version" ]]; then
        echo "glibc $glibc provides $line: ok"
      else
        echo "WARNING: glibc $glibc is older than the bundle's $line: its libraries will not load"
      fi
      continue
    fi
    if [[ -z "$libstdcxx" ]]; then
      echo "warning: libstdc++.so.6 not found (g++ -print-file-name, ldconfig): could not check $line"
      continue
    fi
    have=$( (grep -aoE "\b${kind}_[0-9][0-9.]*\b" "$libstdcxx" 2>/dev/null || true) | sort -u -V | tail -1)
    if [[ -z "$have" ]]; then
      echo "warning: could not read the symbol versions of $libstdcxx: could not check $line"
    elif grep -qaFw "$line" "$libstdcxx"; then
      echo "$libstdcxx provides $line (newest $have): ok"
    else
      echo "WARNING: $libstdcxx is older than the bundle needs: newest $have, needs $line" \
        "(the bundle was built with Debian 12's GCC 12; bring a newer libstdc++6 or build the deps)"
    fi
  done <"$needs"
}

unpack() {
  local dir=${1:?usage: gpu_deps.sh unpack DIR}
  local debs=("$BUNDLE"/*.deb)
  [[ -e "${debs[0]}" ]] || die "no .deb files in $BUNDLE (make them with scripts/gpu_deps.sh)"
  rm -rf "$dir"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local deb
  UNPACKED_WITH=""
  for deb in "${debs[@]}"; do unpack_one "$deb" "$dir"; done
  echo "unpacked ${#debs[@]} packages from $BUNDLE into $dir (with $UNPACKED_WITH)"
  # Absolute links (libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) to their copy in the prefix.
  local link target
  while IFS= read -r link; do
    target=$(readlink "$link")
    if [[ "$target" == /* && -e "$dir$target" ]]; then ln -sfn "$dir$target" "$link"; fi
  done < <(find "$dir" -type l)
  check_needs
  local libdir
  libdir=$( (ls -d "$dir"/usr/lib/*-linux-gnu 2>/dev/null || true) | head -1)
  [[ -d "$libdir" ]] || die "no usr/lib/<triplet> folder in $dir"
  echo "prefix=$dir/usr"
  echo "libdir=$libdir"
}

case ${1:-fetch} in
  fetch) fetch ;;
  unpack) unpack "${2:-}" ;;
  *) die "usage: gpu_deps.sh [fetch] | gpu_deps.sh unpack DIR" ;;
esac
