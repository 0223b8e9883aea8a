#!/usr/bin/env bash
# scripts/install_deps.sh — make sure the Debian packages dsa builds with are installed.
#
#   root:      installs whatever is missing (one `apt-get update`, only if something is missing);
#              a no-op when everything is present.
#   non-root:  installs nothing; prints the command that would be needed and exits 0 (the
#              configure step then names anything really missing).
#
# The CUDA toolkit is not a Debian package here: CMake finds nvcc on its own (DSA_ENABLE_CUDA=AUTO).
set -u

packages=(cmake ninja-build g++ libeigen3-dev catch2 libbenchmark-dev ccache python3)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all build dependencies present (${packages[*]})"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install_deps: missing Debian packages: ${missing[*]}"
  echo "install_deps: not root, installing nothing; run:"
  echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update || { echo "install_deps: apt-get update failed" >&2; exit 1; }
apt-get install -y --no-install-recommends "${missing[@]}" || {
  echo "install_deps: apt-get install ${missing[*]} failed" >&2
  exit 1
}
