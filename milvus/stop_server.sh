#!/usr/bin/env bash
# Stop the Milvus server started by start_server.sh: SIGTERM, wait, then SIGKILL.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=milvus/common.sh
. "$HERE/common.sh"

usage() {
    cat <<EOF
Usage: milvus/stop_server.sh [--help]

Stop the Milvus server whose pid file is in \$MILVUS_DATA_DIR [milvus/data]: send SIGTERM,
wait up to \$MILVUS_STOP_TIMEOUT seconds [30] for it to exit (Milvus needs several seconds
to shut its components down; killing it sooner made the next start hang ~25 s), then SIGKILL.
Does nothing if it is not running. Data stays in \$MILVUS_DATA_DIR for the next start.
EOF
}

only_help_option "$@"

STOP_TIMEOUT="${MILVUS_STOP_TIMEOUT:-30}"

if ! pid="$(running_pid)"; then
    echo "Milvus is not running (no live process in $PID_FILE)."
    rm -f "$PID_FILE"
    exit 0
fi

echo "Stopping Milvus (pid $pid), up to ${STOP_TIMEOUT}s ..."
t0=$SECONDS
kill -TERM "$pid" 2>/dev/null || true
while alive "$pid" && (( SECONDS - t0 < STOP_TIMEOUT )); do
    sleep 0.2
done
if alive "$pid"; then
    echo "Milvus did not exit within ${STOP_TIMEOUT}s; sending SIGKILL." >&2
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
fi
if alive "$pid"; then
    echo "stop_server.sh: pid $pid survived SIGKILL" >&2
    exit 1
fi
rm -f "$PID_FILE"
echo "Milvus stopped after $(( SECONDS - t0 ))s. Logs: $MILVUS_LOG_DIR"
