# Shared settings for start_server.sh and stop_server.sh (sourced, not run).
REPO="$(cd "$HERE/.." && pwd)"
MILVUS_PORT="${MILVUS_PORT:-19530}"
MILVUS_DATA_DIR="$(mkdir -p "${MILVUS_DATA_DIR:-$HERE/data}" && cd "${MILVUS_DATA_DIR:-$HERE/data}" && pwd)"
MILVUS_LOG_DIR="${MILVUS_LOG_DIR:-$HERE/logs}"
MILVUS_BIN_DIR="${MILVUS_BIN_DIR:-$HERE/data}"
PID_FILE="$MILVUS_DATA_DIR/milvus.pid"
STATE_FILE="$MILVUS_DATA_DIR/server.env"
if [[ -n "${MILVUS_PYTHON:-}" ]]; then PY="$MILVUS_PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"
else PY="python3"; fi

# True while PID exists and is not a zombie (an exited child not yet reaped by its parent
# still answers kill -0).
alive() {
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# Print the pid from the pid file if that process is alive and is a Milvus binary
# (a stale pid file whose number was reused by another program must not be signalled).
running_pid() {
    local pid exe
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    [[ -z "$exe" || "$(basename "$exe")" == milvus* ]] || return 1
    echo "$pid"
}

# Value of KEY from the state file written at start, or DEFAULT.
state_get() {
    local line
    line="$(grep -E "^$1=" "$STATE_FILE" 2>/dev/null | tail -n 1)" || true
    if [[ -n "$line" ]]; then echo "${line#*=}"; else echo "$2"; fi
}

# The scripts take no arguments but --help (settings come from the environment); each
# defines its own usage().
only_help_option() {
    case "${1:-}" in
        -h|--help) usage; exit 0 ;;
        "") ;;
        *) echo "$(basename "$0"): unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
}
