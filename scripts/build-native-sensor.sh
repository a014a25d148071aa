#!/usr/bin/env bash
# Publishes the sensor ahead of time (Native AOT) into OUT_DIR (default artifacts/sensor-native):
# the binary `flowsec up` runs on the node, and the one NativeSensorTests checks.
# Needs clang-14 (scripts/deps.sh installs it) and the ILCompiler package from NuGet.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/artifacts/sensor-native}"
dotnet publish "$repo/sensor/FlowSec.Sensor" -c Release -r linux-x64 -p:PublishAot=true -o "$out" -nologo -v quiet -clp:ErrorsOnly
echo "$out/FlowSec.Sensor"
