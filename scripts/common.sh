# Shared helpers for the scripts in this folder (sourced, not run).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Bold stage titles on a terminal only: a log file or pipe gets plain text.
if [ -t 1 ]; then BOLD=$(printf '\033[1m') PLAIN=$(printf '\033[0m'); else BOLD="" PLAIN=""; fi
stage() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The Python of the project's venv if there is one, else whatever is on PATH.
if [ -x "$ROOT/.venv/bin/python" ]; then
  PY="$ROOT/.venv/bin/python"
  export PATH="$ROOT/.venv/bin:$PATH"
else
  PY=python3
fi
"$PY" -c 'import paddle, pymilvus, fastapi' 2>/dev/null \
  || die "the project is not installed for $PY: run 'make setup' (or: . .venv/bin/activate)"

# config_path DATASET -> the model config the tutorial uses for it.
config_for() {
  case "$1" in
    amazonbook) echo "mind/config.yaml" ;;
    synthetic|movielens) echo "mind/config_$1.yaml" ;;
    *) die "unknown dataset '$1' (amazonbook, synthetic or movielens)" ;;
  esac
}

# need_dir DIR HINT: fail fast with the command that creates DIR.
need_dir() { [ -d "$1" ] || die "$1 is missing; create it first: $2"; }

# port_free PORT: true when nothing listens on 127.0.0.1:PORT (checked as uvicorn binds it).
port_free() {
  "$PY" - "$1" <<'PY' 2>/dev/null
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
PY
}
