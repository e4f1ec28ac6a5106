#!/usr/bin/env bash
# Start a real Milvus standalone server (PyPI package `milvus` 2.3.5) as a local process.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=milvus/common.sh
. "$HERE/common.sh"

usage() {
    cat <<EOF
Usage: milvus/start_server.sh [--help]

Start a Milvus 2.3.5 standalone server from the PyPI package \`milvus\` (no Docker),
wait until it answers, and print where its logs are. Does nothing if it is already running.

Environment (defaults in brackets):
  MILVUS_PORT           gRPC/HTTP port clients use              [19530]
  MILVUS_DATA_DIR       data, config, pid file                  [milvus/data]
  MILVUS_LOG_DIR        server logs                             [milvus/logs]
  MILVUS_BIN_DIR        unpacked binaries (a cache)             [milvus/data]
  MILVUS_START_TIMEOUT  seconds to wait for it to answer        [120]
  MILVUS_PYTHON         Python with \`milvus\` and \`pymilvus\`     [.venv/bin/python or python3]

Then: export MILVUS_URI=http://127.0.0.1:\$MILVUS_PORT. Stop it with milvus/stop_server.sh.

Addresses: the components advertise 127.0.0.1 to each other and embedded etcd listens on
127.0.0.1 only, but Milvus 2.3.5 has no listen-address setting: its gRPC and HTTP ports
listen on all interfaces. On a machine reachable from outside, firewall those ports.
EOF
}

only_help_option "$@"

START_TIMEOUT="${MILVUS_START_TIMEOUT:-120}"

if pid="$(running_pid)"; then
    echo "Milvus is already running (pid $pid) on port $(state_get MILVUS_PORT "$MILVUS_PORT")."
    echo "Logs: $MILVUS_LOG_DIR"
    exit 0
fi
rm -f "$PID_FILE"

# -I: not from the current directory, where the repository's own milvus/ folder would import
# as an empty namespace package and pass for the real one.
"$PY" -I -c "import milvus, pymilvus" 2>/dev/null || {
    echo "start_server.sh: $PY cannot import milvus and pymilvus;" \
         "install them: pip install -r requirements-dev.txt" >&2
    exit 1
}

mkdir -p "$MILVUS_DATA_DIR" "$MILVUS_LOG_DIR"
prep="$("$PY" "$HERE/prepare_server.py" --data-dir "$MILVUS_DATA_DIR" --log-dir "$MILVUS_LOG_DIR" \
        --bin-dir "$MILVUS_BIN_DIR" --port "$MILVUS_PORT")" || {
    echo "start_server.sh: could not prepare the server (see the message above)" >&2
    exit 1
}
eval "$prep"

# The server reads configs/milvus.yaml relative to its working directory. setsid puts it in
# its own session so a Ctrl-C in this shell does not reach it; without job control (set +m)
# setsid execs in place, so $! is the server's own pid.
set +m
(
    cd "$MILVUS_DATA_DIR"
    export DEPLOY_MODE=STANDALONE METRICS_PORT="$MILVUS_METRICS_PORT" \
           MILVUS_RUN_DIR="$MILVUS_DATA_DIR/run"
    export LD_LIBRARY_PATH="$(dirname "$MILVUS_EXE")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    exec setsid "$MILVUS_EXE" run standalone \
        >"$MILVUS_LOG_DIR/milvus-stdout.log" 2>"$MILVUS_LOG_DIR/milvus-stderr.log" </dev/null
) &
pid=$!
echo "$pid" >"$PID_FILE"
cat >"$STATE_FILE" <<EOF
MILVUS_PORT=$MILVUS_PORT
MILVUS_METRICS_PORT=$MILVUS_METRICS_PORT
EOF

echo "Starting Milvus $MILVUS_PKG_VERSION (pid $pid) on port $MILVUS_PORT, data in $MILVUS_DATA_DIR ..."
t0=$SECONDS
# Healthy first (cheap HTTP probe), then a real client call to be sure the gRPC port answers.
until curl -fsS --max-time 2 "http://127.0.0.1:$MILVUS_METRICS_PORT/healthz" 2>/dev/null | grep -q OK; do
    if ! alive "$pid"; then
        rm -f "$PID_FILE"
        if [[ -z "${MILVUS_START_RETRIED:-}" ]]; then
            # After a predecessor that had to be killed, its coordinators' sessions linger in
            # etcd until they expire, and the new proxy gives up waiting for them: once more.
            echo "start_server.sh: Milvus exited during start-up; starting it once more in 20 s" >&2
            sleep 20
            MILVUS_START_RETRIED=1 exec bash "$0" "$@"
        fi
        echo "start_server.sh: Milvus exited during start-up. Logs: $MILVUS_LOG_DIR" >&2
        tail -n 20 "$MILVUS_LOG_DIR/milvus-stderr.log" >&2 || true
        exit 1
    fi
    if (( SECONDS - t0 >= START_TIMEOUT )); then
        echo "start_server.sh: Milvus (pid $pid) not healthy after ${START_TIMEOUT}s;" \
             "it is left running for inspection (stop it with milvus/stop_server.sh)." \
             "Logs: $MILVUS_LOG_DIR" >&2
        exit 1
    fi
    sleep 0.5
done
remaining=$(( START_TIMEOUT - (SECONDS - t0) ))
(( remaining < 5 )) && remaining=5
if ! "$PY" - 127.0.0.1 "$MILVUS_PORT" "$remaining" <<'EOF'
import sys, time
from pymilvus import MilvusClient
host, port, budget = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + budget
while True:
    try:
        client = MilvusClient(uri=f"http://{host}:{port}", timeout=5)
        client.list_collections(timeout=5)
        client.close()
        break
    except Exception as exc:  # the proxy may lag the health endpoint by a moment
        if time.monotonic() > deadline:
            sys.exit(f"pymilvus could not reach {host}:{port}: {exc}")
        time.sleep(0.5)
EOF
then
    echo "start_server.sh: healthy but not answering on 127.0.0.1:$MILVUS_PORT. Logs: $MILVUS_LOG_DIR" >&2
    exit 1
fi
echo "Milvus is up after $(( SECONDS - t0 ))s: MILVUS_URI=http://127.0.0.1:$MILVUS_PORT"
echo "Logs: $MILVUS_LOG_DIR (milvus-stdout.log, milvus-stderr.log, etcd.log)"
