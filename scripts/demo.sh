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
echo "== over the air: a private Mosquitto, the runtime on the sim plant, a newer signed policy pushed"
mqtt_dir="$out/mqtt"
mkdir -p "$mqtt_dir"
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
broker="mqtt://127.0.0.1:$port"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n' "$port" >"$mqtt_dir/mosquitto.conf"
"$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$mqtt_dir/mosquitto.conf" >"$mqtt_dir/mosquitto.log" 2>&1 &
broker_pid=$!
runtime_pid=""
stop_mqtt_demo() { # by process id, runtime first (it publishes "offline"), then the broker
    if [ -n "$runtime_pid" ]; then kill "$runtime_pid" 2>/dev/null || true; wait "$runtime_pid" 2>/dev/null || true; fi
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
}
trap stop_mqtt_demo EXIT
for _ in $(seq 100); do (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
# --rollback-below: the update below arrives before the first 500-step episode has ended, so
# the health check gets a fixed floor (an update whose first 5 episodes average < 400 is undone)
.venv/bin/python -m runtime --policy "$out/run/dist/policy.npz" --plant sim --hz 100 \
    --broker "$broker" --device-id demo-pi --public-key "$out/keys/signing.pub" --rollback-below 400 \
    --state-dir "$mqtt_dir/state" --telemetry-interval 1 >"$mqtt_dir/runtime.out" 2>"$mqtt_dir/runtime.log" &
runtime_pid=$!
for _ in $(seq 100); do
    .venv/bin/python -m export status --broker "$broker" --json 2>/dev/null | grep -q '"online"' && break
    sleep 0.2
done
version=$(.venv/bin/python -c 'import sys; from runtime.policy import load_policy; print(load_policy(sys.argv[1]).version)' "$out/run/dist/policy.npz")
.venv/bin/python -m export "$out/run" --out "$out/update" --sign "$out/keys/signing.key" --version $((version + 1))
.venv/bin/python -m export push "$out/update/policy.npz" --device demo-pi --broker "$broker"
echo "-- pushing the older policy again is refused (anti-rollback):"
.venv/bin/python -m export push "$out/run/dist/policy.npz" --device demo-pi --broker "$broker" --timeout 5 || true
.venv/bin/python -m export status --broker "$broker"
echo "-- three telemetry messages:"
.venv/bin/python - "$port" <<'PY'
import sys, threading
import paho.mqtt.client as mqtt

done, seen = threading.Event(), []
def on_message(client, userdata, message):
    seen.append(message.payload.decode())
    print(seen[-1], flush=True)
    if len(seen) == 3:
        done.set()
client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
client.on_message = on_message
client.connect("127.0.0.1", int(sys.argv[1]))
client.subscribe("reinforce-edge/devices/demo-pi/telemetry")
client.loop_start()
done.wait(10)
client.loop_stop()
PY
grep -E "applied|rejected" "$mqtt_dir/runtime.log" || true
stop_mqtt_demo
trap - EXIT
echo "-- state kept for a reboot: $(ls "$mqtt_dir/state" | tr '\n' ' ')"
echo "== done: curve $out/run/curve.png, animation $out/run/episode.gif"
