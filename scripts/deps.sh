#!/usr/bin/env bash
# Installs what FlowSec needs from Debian's apt and npm, or says exactly what is missing.
#   scripts/deps.sh           runtime packages (what `./flowsec up` needs)
#   scripts/deps.sh --test    also what the test suite needs (browser, grpc peer, load tools)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

runtime=(bpftool libbpf1 libbpf-dev clang-14 llvm-14 xz-utils clickhouse-server clickhouse-client iproute2)
testing=(python3-grpcio python3-protobuf protobuf-compiler chromium nginx-light wrk dnsmasq-base bind9-dnsutils curl iptables procps
         qemu-system-x86 busybox-static cpio gcc libelf-dev zlib1g-dev)

want=("${runtime[@]}")
[ "${1:-}" = "--test" ] && want+=("${testing[@]}")

missing=()
for pkg in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "FlowSec needs these Debian packages: ${missing[*]}" >&2
    echo "install them as root: apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "installing missing packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# The kernel matrix fetches Debian's cloud kernels with apt-get download: it needs package lists.
if [ "${1:-}" = "--test" ] && [ "$(id -u)" = 0 ] && \
   [ -z "$(apt-cache search --names-only 'linux-image-.*-cloud-amd64-unsigned' 2>/dev/null | head -1)" ]; then
  apt-get update -qq >&2
fi

for tool in dotnet node npm; do
  command -v "$tool" >/dev/null || { echo "FlowSec needs $tool on PATH (.NET 10 SDK, Node 20)" >&2; exit 1; }
done

# The UI's SignalR client (and, for tests, playwright-core) come from npm.
if [ ! -d "$repo/ui/node_modules/@microsoft/signalr" ] || [ "$repo/ui/package-lock.json" -nt "$repo/ui/node_modules/.package-lock.json" ]; then
  (cd "$repo/ui" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
