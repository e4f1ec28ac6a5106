"""Physical generations of one served collection: which is served, the switch, and builds.

Replacing the items never disturbs searches: a replace builds a fresh physical collection
``<name>__v<generation>`` and only then switches the served name to it.
  * Server: the served name is a Milvus alias, switched atomically with alter_alias.
  * Milvus Lite 2.5.1 implements neither aliases nor rename_collection, so the switch is a
    pointer: a tiny collection ``<name>__served`` whose row with the highest generation names
    the served physical collection (one atomic insert).
Several processes may replace at once (replicas on one server). Each build holds a lease, a
row ``(generation, owner, heartbeat)`` in ``<name>__builds``, refreshed every
HEARTBEAT_SECONDS. Clean-up drops a physical collection only when it is not served and its
lease is gone, older than LEASE_SECONDS, or owned by a process of this very PID namespace that
no longer exists: a build under way elsewhere is never dropped (milvus/DEPLOY.md, "Several
writers"). A drop leaves the lease table, so a build under way keeps its lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from itemstore.client import Connection, DataType, MilvusClient
from itemstore.errors import BuildConflict, is_not_found, is_not_loaded
from itemstore.names import BUILDS, PHYSICAL, POINTER

log = logging.getLogger("itemstore")

HEARTBEAT_SECONDS = 5.0
# A lease not refreshed for this long belongs to a build that died (12 missed heartbeats;
# replicas' clocks are assumed within a few seconds of each other, as NTP keeps them).
LEASE_SECONDS = 60.0
_HOST = socket.gethostname()


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" if it does not exist): with the
    pid it names one process, even after the pid is reused."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[-1].split()[19] if stat else ""


def _pid_namespace() -> str:
    """This boot and PID namespace: where a pid means the same process as here. A container
    restarted with the same hostname and PID 1, or another on host networking, is elsewhere."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return f"{_read('/proc/sys/kernel/random/boot_id')}/{ns}"


# Who holds a lease: a random token per process (never mistaken for another), plus where
# its pid can be checked. "host|pid|start|namespace|token" (a namespace holds ':' and '/').
_NAMESPACE = _pid_namespace()
_OWNER = "|".join([_HOST, str(os.getpid()), _start_time(os.getpid()), _NAMESPACE,
                   uuid.uuid4().hex[:12]])


def _owner() -> str:
    return _OWNER


@dataclass(frozen=True)
class Lease:
    generation: int
    owner: str  # _OWNER of the process building it
    heartbeat_ms: int

    def live(self, now_ms: int | None = None) -> bool:
        """Heartbeat younger than LEASE_SECONDS; and, when the owner's pid can be checked here
        (same boot and PID namespace, with a start time), that process still running."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if now_ms - self.heartbeat_ms > LEASE_SECONDS * 1000:
            return False
        parts = self.owner.split("|")
        if len(parts) != 5 or not parts[1].isdigit() or not parts[2] or parts[3] != _NAMESPACE \
                or not _NAMESPACE.split("/")[-1]:
            return True  # another host or namespace: only the heartbeat can tell
        return _start_time(int(parts[1])) == parts[2]

    def describe(self) -> str:
        age = max(0.0, time.time() - self.heartbeat_ms / 1000)
        host, pid = (self.owner.split("|") if "|" in self.owner
                     else self.owner.split(":") + ["?"])[:2]
        return (f"process {pid} on {host} (generation {self.generation}, heartbeat "
                f"{age:.0f} s ago)")


def _tiny_schema(description: str, *fields: tuple[str, DataType, dict]) -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                        description=description)
    schema.add_field("id", DataType.INT64, is_primary=True)
    for name, dtype, kwargs in fields:
        schema.add_field(name, dtype, **kwargs)
    # Milvus requires a vector field in every collection; this one is never searched.
    schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
    return schema


class Generations:
    """The served physical collection of ``collection``, its switch and its build leases."""

    def __init__(self, conn: Connection, collection: str) -> None:
        self.conn, self.collection = conn, collection
        self.timeout = conn.timeout
        # Bookkeeping runs only on the write path, where waiting beats failing: creating and
        # loading a collection, or reading one a restarted server is still loading, takes
        # seconds, more than a recall's MILVUS_TIMEOUT.
        self.slow_timeout = max(conn.timeout, 60.0)

    # ------------------------------------------------------------------ names
    def names(self) -> list[str]:
        return self.conn.call(lambda c: c.list_collections(timeout=self.timeout))

    def physical_names(self) -> list[str]:
        prefix = self.collection + PHYSICAL
        return [n for n in self.names() if n.startswith(prefix) and n[len(prefix):].isdigit()]

    def physical_name(self, generation: int) -> str:
        return f"{self.collection}{PHYSICAL}{generation}"

    @staticmethod
    def generation(physical: str) -> int:
        return int(physical.rsplit(PHYSICAL, 1)[1])

    def is_physical(self, name: str) -> bool:
        """One of our generations (not a plain collection that holds the served name)."""
        prefix = self.collection + PHYSICAL
        return name.startswith(prefix) and name[len(prefix):].isdigit()

    def drop_collection(self, name: str) -> None:
        """Drop ``name`` if it exists (another writer may drop it first: not an error)."""
        if name in self.names():
            try:
                self.conn.call(lambda c: c.drop_collection(name, timeout=self.timeout))
            except Exception as exc:
                if not is_not_found(exc):
                    raise

    # ------------------------------------------------------------------ served
    def served(self) -> str | None:
        """The physical collection served now (None if nothing is)."""
        if self.conn.backend == "lite":
            return self._pointer()
        target = self._alias_target()
        if target:
            return target
        # A plain collection holding the name (made before aliases were used, or by hand).
        return self.collection if self.collection in self.names() else None

    def switch(self, physical: str) -> str | None:
        """Serve ``physical``; returns what was served before (None if nothing was)."""
        if self.conn.backend == "lite":
            previous = self._pointer()
            self._point_to(physical)
            return previous
        for _ in range(3):  # another writer may create or drop the alias meanwhile
            previous = self._alias_target()
            try:
                if previous:
                    self.conn.call(lambda c: c.alter_alias(physical, self.collection,
                                                           timeout=self.timeout))
                    return previous
                if self.collection in self.names():
                    # A plain collection holds the name (the tutorial's own code, an older
                    # version, or by hand): it must go before the alias can take the name;
                    # searches fail for that moment only.
                    self.drop_collection(self.collection)
                self.conn.call(lambda c: c.create_alias(physical, self.collection,
                                                        timeout=self.timeout))
                return None
            except Exception as exc:
                if not _alias_race(exc):
                    raise
                log.info("the alias %s changed under this switch (%s); again", self.collection, exc)
        raise BuildConflict(f"another process keeps switching collection {self.collection!r}; "
                            "try again")

    def _alias_target(self) -> str | None:
        """The physical collection the alias names, None if there is no alias."""
        # Scan our physical collections' aliases instead of describe_alias, whose "not found"
        # pymilvus logs as an ERROR with a traceback on every call.
        for name in self.physical_names():
            try:
                info = self.conn.call(lambda c, n=name: c.list_aliases(collection_name=n,
                                                                       timeout=self.timeout))
            except Exception as exc:
                if is_not_found(exc):  # dropped by another writer since the listing
                    continue
                raise
            if self.collection in info.get("aliases", []):
                return name
        return None

    def _pointer(self) -> str | None:
        pointer = self.collection + POINTER
        if pointer not in self.names():
            return None
        rows = self.conn.call(lambda c: c.query(pointer, filter="id >= 0", output_fields=["target"],
                                                timeout=self.timeout))
        return max(rows, key=lambda r: r["id"])["target"] if rows else None

    def _point_to(self, physical: str) -> None:
        pointer = self.collection + POINTER
        self._ensure_tiny(pointer, ("target", DataType.VARCHAR, {"max_length": 256}))
        gen = self.generation(physical)
        row = {"id": gen, "target": physical, "unused": [0.0, 0.0]}
        self.conn.call(lambda c: c.insert(pointer, [row], timeout=self.timeout))
        # Older pointer rows are history now; the highest generation already wins.
        self.conn.call(lambda c: c.delete(pointer, filter=f"id < {gen}", timeout=self.timeout))

    def _ensure_tiny(self, name: str, *fields: tuple[str, DataType, dict]) -> None:
        if name in self.names():
            return
        schema = _tiny_schema("item store bookkeeping", *fields)
        idx = MilvusClient.prepare_index_params()
        idx.add_index("unused", index_type="FLAT", metric_type="L2")
        try:
            self.conn.call(lambda c: c.create_collection(
                name, schema=schema, index_params=idx, consistency_level="Strong",
                timeout=self.slow_timeout))
        except Exception:
            if name not in self.names():  # not another process creating it at the same time
                raise

    # ------------------------------------------------------------------ build leases
    def begin(self, generation: int) -> None:
        """Hold a lease for building ``generation``; BuildConflict if an earlier build of
        another process is under way (the later one yields, so the earlier can finish)."""
        self._ensure_tiny(self.collection + BUILDS, ("owner", DataType.VARCHAR, {"max_length": 256}),
                          ("heartbeat", DataType.INT64, {}))
        self.heartbeat(generation)
        earlier = [lease for lease in self.leases()
                   if lease.generation < generation and lease.live()]
        if earlier:
            self.end(generation)
            raise BuildConflict(
                f"another insert_data is loading collection {self.collection!r}: "
                f"{earlier[0].describe()}; try again when it finishes")

    def heartbeat(self, generation: int) -> None:
        row = {"id": generation, "owner": _owner(), "heartbeat": int(time.time() * 1000),
               "unused": [0.0, 0.0]}
        self.conn.call(lambda c: c.upsert(self.collection + BUILDS, [row],
                                          timeout=self.slow_timeout))

    def end(self, generation: int) -> None:
        self.conn.call(lambda c: c.delete(self.collection + BUILDS, filter=f"id == {generation}",
                                          timeout=self.slow_timeout))

    def leases(self) -> list[Lease]:
        builds = self.collection + BUILDS
        if builds not in self.names():
            return []
        def read(c: MilvusClient) -> list[dict]:
            return c.query(builds, filter="id >= 0", output_fields=["owner", "heartbeat"],
                           consistency_level="Strong", timeout=self.slow_timeout)

        try:
            rows = self.conn.call(read)
        except Exception as exc:
            if not is_not_loaded(exc):
                raise
            self.conn.call(lambda c: c.load_collection(builds, timeout=self.slow_timeout))
            rows = self.conn.call(read)
        return [Lease(int(r["id"]), str(r["owner"]), int(r["heartbeat"])) for r in rows]

    def others_building(self, mine: int | None = None) -> list[Lease]:
        return [lease for lease in self.leases() if lease.generation != mine and lease.live()]

    # ------------------------------------------------------------------ clean-up
    def cleanup(self) -> list[str]:
        """Drop physical collections that are provably abandoned; returns their names.

        The order matters: collections are listed before leases are read (a build writes its
        lease before it creates its collection), and the served one is read last (a build
        ends its lease only after its switch).
        """
        names = self.physical_names()
        leases = {lease.generation: lease for lease in self.leases()}
        served = self.served()
        dropped = []
        for name in names:
            lease = leases.get(self.generation(name))
            if name == served or (lease is not None and lease.live()):
                continue
            try:
                self.conn.call(lambda c, n=name: c.drop_collection(n, timeout=self.timeout))
                dropped.append(name)
            except Exception as exc:
                if not is_not_found(exc):
                    raise
        for lease in leases.values():
            if not lease.live():
                self.end(lease.generation)
        if dropped:
            log.info("dropped abandoned collections %s", ", ".join(dropped))
        return dropped

    def drop_all(self) -> None:
        """Drop the served name and every generation; BuildConflict while another process
        is building (its build would fail halfway). The lease table stays: a build that
        starts meanwhile holds its lease there, and clean-up never drops what it builds."""
        names = self.physical_names()  # before the leases, as in cleanup
        others = self.others_building()
        if others:
            raise BuildConflict(f"another insert_data is loading collection {self.collection!r}: "
                                f"{others[0].describe()}; drop after it finishes")
        if self.conn.backend == "server":
            if self._alias_target():
                try:
                    self.conn.call(lambda c: c.drop_alias(self.collection, timeout=self.timeout))
                except Exception as exc:
                    if not _alias_race(exc):
                        raise
        else:
            self.drop_collection(self.collection + POINTER)
        # A build that began since the check creates its collection after `names` was read.
        for name in names:
            self.drop_collection(name)
        # A plain collection of that name (made before this module, or by hand).
        self.drop_collection(self.collection)


def _alias_race(exc: Exception) -> bool:
    """An alias error that means another writer got there first (created, moved or dropped
    it), which a second look resolves."""
    text = str(exc).lower()
    return is_not_found(exc) or "alias" in text and any(
        w in text for w in ("not exist", "not found", "already exist", "exists", "duplicate"))


class Heartbeat:
    """Keeps a build's lease fresh from a thread while the build runs."""

    def __init__(self, generations: Generations, generation: int) -> None:
        # A connection of its own: a heartbeat that times out (Milvus Lite answers nothing
        # while it builds an index) must not close the channel the build itself is using.
        own = Connection(generations.conn.uri, generations.conn.token, generations.conn.timeout)
        self._gens, self._generation = Generations(own, generations.collection), generation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="build-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._gens.slow_timeout + 1)
        self._gens.conn.reset()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._gens.heartbeat(self._generation)
            except Exception as exc:  # the build itself will fail and say why
                log.warning("build heartbeat failed: %s", exc)
