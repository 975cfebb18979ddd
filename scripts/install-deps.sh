#!/usr/bin/env bash
# Installs everything Tessera needs to build, test and train, from Debian's packages only.
# Safe to run repeatedly; skips apt when every package is already present.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libdnnl-dev            # oneDNN: CPU GEMMs (f32, bf16 on AVX-512-BF16 / AMX)
  libgtest-dev libgmock-dev libbenchmark-dev
  libtomlplusplus-dev    # TOML configs
  nlohmann-json3-dev     # manifests, metrics, safetensors headers
  libcli11-dev           # command line
  libfmt-dev
  zlib1g-dev             # gzip'd IDX images
  libssl-dev             # HMAC-SHA256 of the torchrun-style launch's store (libcrypto)
  libpcre2-dev           # the tokenizers' pre-tokenization regexes (UTF, Unicode classes, JIT)
  dataset-fashion-mnist  # images for the classifiers
  bible-kjv bible-kjv-text  # the default text corpus
  gnuplot-nox            # training curves
  openmpi-bin libopenmpi-dev  # distributed training over MPI (mpirun, libmpi)
  iproute2 jq            # tests/mpi: network namespaces and a veth pair (ip); metrics (jq)
  slurmctld slurmd slurm-client munge  # tests/slurm: a one-node Slurm cluster (srun, sbatch)
  clang libclang-rt-14-dev libomp-dev  # scripts/fuzz.sh: clang, libFuzzer + sanitizers, OpenMP
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present"
fi
