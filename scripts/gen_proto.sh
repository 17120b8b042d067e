#!/usr/bin/env bash
# Regenerates peerd/v1/*_pb2*.py(i) from proto/peerd/v1/*.proto with grpcio-tools.
# The generated package is committed; tests/unit/test_proto_fresh.py fails when it is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PY" -m grpc_tools.protoc -I proto --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" proto/peerd/v1/*.proto
mkdir -p "$out/peerd/v1" && touch "$out/peerd/v1/__init__.py"
