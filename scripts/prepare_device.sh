#!/usr/bin/env bash
# scripts/prepare_device.sh — run HERE (a machine with apt access) before a GPU run. The GPU machine
# has no network, so this stages what scripts/device_run.sh needs inside the working tree, in
# git-ignored folders the device call must carry (carry: [".deps", ".testdata"]):
#   .deps/      the .deb files of Catch2, Eigen and Google Benchmark (apt-get download)
#   .testdata/  a copy of ../shared/testdata (or $DSA_TESTDATA_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(catch2 libeigen3-dev libbenchmark-dev libbenchmark1debian)

mkdir -p .deps
(
  cd .deps
  for p in "${packages[@]}"; do
    if ls "${p}"_*.deb >/dev/null 2>&1; then
      echo "prepare_device: .deps/$(ls "${p}"_*.deb | head -n 1) already there"
    else
      echo "prepare_device: apt-get download ${p}"
      apt-get download "${p}"
    fi
  done
)

src="${DSA_TESTDATA_DIR:-../shared/testdata}"
if [ -d "$src" ]; then
  rm -rf .testdata
  cp -r "$src" .testdata
  chmod -R u+w .testdata
  echo "prepare_device: copied $src to .testdata ($(du -sh .testdata | cut -f1))"
else
  echo "prepare_device: no test data at $src; golden tests will report Skipped on the device" >&2
fi

echo "prepare_device: staged $(du -sh .deps | cut -f1) of packages; now run scripts/device_run.sh on the GPU"
echo "                machine, carrying .deps and .testdata"
