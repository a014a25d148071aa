#!/usr/bin/env bash
# Runs FlowSec's whole test suite: unit tests, real-kernel and real-server integration tests,
# and the browser tests. Installs what it needs first. Must run as root (eBPF, netns, cgroups).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
scripts/deps.sh --test
scripts/build-native-sensor.sh >/dev/null
dotnet build FlowSec.sln -nologo -v quiet -clp:ErrorsOnly
results="$repo/artifacts/test-results"
rm -rf "$results" && mkdir -p "$results"
status=0
dotnet test tests/FlowSec.Tests --no-build -nologo --logger "console;verbosity=normal" \
  --logger "trx;LogFileName=$results/tests.trx" "$@" | tee "$results/console.log" || status=$?
# The tail is what CI keeps: name the failures, then repeat the runner's summary last (the trx
# logger prints its file's path after the summary).
if [ "$status" -ne 0 ] && [ -f "$results/tests.trx" ]; then scripts/failure-digest.py "$results/tests.trx"; fi
sed -n '/^Test Run \(Successful\|Failed\|Aborted\)/,/^ Total time/p' "$results/console.log"
exit "$status"
