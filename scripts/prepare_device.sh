#!/usr/bin/env bash
# scripts/prepare_device.sh — run HERE (a machine with apt access) before a GPU run. The GPU machine
# has no network, so this stages what scripts/device_run.sh needs inside the working tree, in
# git-ignored folders the device call must carry (carry: [".deps", ".testdata"]):
#   .deps/      the .deb files of Catch2, Eigen and Google Benchmark (apt-get download)
#   .testdata/  a copy of ../shared/testdata (or $DSA_TESTDATA_DIR)
#   .snap/      the committed tree at HEAD (what the run tests), with its commit id
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

# .snap/: the committed tree (git archive HEAD) and its commit id. The device tool copies the working
# tree, uncommitted edits included; a GPU run recorded in docs/validation.md must test one commit.
rm -rf .snap
mkdir .snap
git archive HEAD | tar -x -C .snap
git rev-parse --short HEAD > .snap/.snapshot-commit
grep -qx '/.snap/' .git/info/exclude 2>/dev/null || echo '/.snap/' >> .git/info/exclude

echo "prepare_device: staged $(du -sh .deps | cut -f1) of packages and a snapshot of $(cat .snap/.snapshot-commit);"
echo "  on the GPU machine, carrying .deps, .testdata and .snap, run:"
echo "  cd .snap && ln -s ../.deps ../.testdata . && BUILD_DIR=/tmp/bd bash scripts/device_run.sh"
