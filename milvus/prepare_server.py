"""Prepare a local Milvus standalone server from the PyPI `milvus` package (2.3.5).

Called by start_server.sh; not meant to be run by hand. It
  1. unpacks the Milvus binaries that the wheel ships compressed into a shared bin dir
     (done once; later calls only compare checksums), under a file lock so two starts
     cannot write the same binary at once;
  2. renders milvus.yaml with our ports, loopback addresses and data/log directories;
  3. prints shell assignments (MILVUS_EXE=..., ...) for the caller to `eval`.

We do not use the package's own `milvus-server` launcher: its stop gives the server one
second before SIGKILL, and a server killed that quickly made the next start hang ~25 s.
start_server.sh runs the binary itself and stop_server.sh owns the shutdown.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shlex
import socket
import sys
from pathlib import Path

# The package's config renderer and unpacker are reused rather than rewritten; the
# version is pinned (requirements-dev.txt), so these names are stable for us.
import milvus
from milvus import MilvusServerConfig, _initialize_data_files

# Milvus components that advertise an address to the others through the embedded etcd.
# Pinning them to loopback keeps their traffic off the public interface. (2.3.5 has no
# listen-address setting: the gRPC ports still listen on all interfaces.)
_COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
# Prometheus/health HTTP port is probed upwards from Milvus's default.
_METRICS_PORT_START = 9091
_ETCD_PEER_PORT = 2380


def unpack_binaries(bin_base: Path) -> Path:
    """Unpack the wheel's binaries into bin_base/bin once; return the milvus executable."""
    bin_base.mkdir(parents=True, exist_ok=True)
    with open(bin_base / ".unpack.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _initialize_data_files(str(bin_base))
    exe = bin_base / "bin" / "milvus"
    if not os.access(exe, os.X_OK):
        raise RuntimeError(f"unpacking failed: {exe} is not executable")
    return exe


def render_config(data_dir: Path, log_dir: Path, port: int) -> int:
    """Write data_dir/configs/milvus.yaml; return the metrics (health) port chosen."""
    # The embedded etcd's peer port and the /run/milvus pid lock are fixed in this build, so
    # only one such server can run per machine: say so instead of letting it crash.
    probe = MilvusServerConfig().try_bind_port(_ETCD_PEER_PORT)
    if probe is None:
        raise RuntimeError(f"port {_ETCD_PEER_PORT} (embedded etcd peer) is taken: another "
                           "Milvus 2.3.5 server is probably running; one per machine")
    probe.close()
    # Our own probe with SO_REUSEADDR, as the Go server binds: the package's probe lacks it
    # and refuses a port that a just-stopped server left in TIME_WAIT.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise RuntimeError(f"port {port} is taken: {exc}") from exc
    cfg = MilvusServerConfig(data_dir=str(data_dir))
    cfg.resolve()  # probes free ports for the internal components
    cfg.set("proxy_port", port)
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg.set("system_log_path", str(log_dir))
    cfg.set("etcd_log_path", str(log_dir / "etcd.log"))
    for component in _COMPONENTS:
        cfg.set(f"{component}.ip", "127.0.0.1")
    cfg.write_config()
    metrics_port, sock = cfg.resolve_port(_METRICS_PORT_START)
    if sock is None:
        raise RuntimeError("no free port for the Milvus metrics/health endpoint")
    sock.close()
    return int(metrics_port)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--log-dir", type=Path, required=True)
    ap.add_argument("--bin-dir", type=Path, required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        exe = unpack_binaries(args.bin_dir.resolve())
        metrics_port = render_config(args.data_dir.resolve(), args.log_dir.resolve(),
                                     args.port)
    except (RuntimeError, OSError) as exc:
        print(f"prepare_server: {exc}", file=sys.stderr)
        return 1
    out = {
        "MILVUS_EXE": str(exe),
        "MILVUS_METRICS_PORT": str(metrics_port),
        "MILVUS_PKG_VERSION": milvus.__version__,
    }
    for key, value in out.items():
        print(f"{key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
