#!/usr/bin/env bash
# The main job end to end: set up, train, evaluate with a GIF (more stages join as they land).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
out=${DEMO_DIR:-demo}
rm -rf "$out" && mkdir -p "$out"
echo "== train"
.venv/bin/python -m trainer --seed 1 --out "$out/run"
echo "== evaluate"
.venv/bin/python -m trainer eval "$out/run" --episodes 20 --record "$out/run/episode.gif"
echo "== export: signed policy.npz, policy.onnx and policy.h, each checked against the forward pass"
.venv/bin/python -m export keygen --out "$out/keys"
.venv/bin/python -m export "$out/run" --all --sign "$out/keys/signing.key"
.venv/bin/python -m export verify "$out/run/dist/policy.npz" --public-key "$out/keys/signing.pub"
echo "== done: curve $out/run/curve.png, animation $out/run/episode.gif"
