#!/usr/bin/env bash
# Runs FlowSec's whole test suite: unit tests, real-kernel and real-server integration tests,
# and the browser tests. Installs what it needs first. Must run as root (eBPF, netns, cgroups).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
scripts/deps.sh --test
scripts/build-native-sensor.sh >/dev/null
dotnet build FlowSec.sln -nologo -v quiet -clp:ErrorsOnly
dotnet test tests/FlowSec.Tests --no-build -nologo --logger "console;verbosity=normal" "$@"
