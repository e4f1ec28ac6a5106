"""Item vectors into a Milvus server by bulk import (files), against row inserts.

    pip install "pymilvus[bulk_writer]==2.6.17"   # or: minio azure-storage-blob pyarrow ml_dtypes
    python bench/bulk_import.py --uri http://127.0.0.1:19530 --items 200000 \\
        --storage-root milvus/data/data                   # the server's localStorage.path

The conventional way to load a catalogue of tens of millions of items: write the rows as
files with pymilvus's LocalBulkWriter (NumPy columns here: supported by Milvus since 2.2),
put them where the server's object storage is (MinIO/S3 in production; the local server of
milvus/start_server.sh stores on disk, so the files go under its localStorage.path), then one
bulk-insert task per file set instead of thousands of insert requests. Prints JSON with both
timings, or the server's own error when the import fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections, utility
from pymilvus.bulk_writer import BulkFileType, LocalBulkWriter

DIM = 65  # 64-d items stored with the extra coordinate of itemstore.vectors.augment


def schema() -> CollectionSchema:
    return CollectionSchema([FieldSchema("id", DataType.INT64, is_primary=True),
                             FieldSchema("embedding", DataType.FLOAT_VECTOR, dim=DIM)])


def write_files(items: int, root: Path) -> tuple[list[str], float]:
    """The rows as NumPy column files under root, and seconds taken. Absolute paths: with local
    storage the server opens a file path as it is (a path relative to localStorage.path
    failed: "stat bulk/...: no such file or directory")."""
    t0 = time.perf_counter()
    writer = LocalBulkWriter(schema=schema(), local_path=str(root / "bulk"),
                             file_type=BulkFileType.NUMPY, chunk_size=256 << 20)
    rng = np.random.default_rng(0)
    for start in range(1, items + 1, 50_000):
        n = min(50_000, items + 1 - start)
        vectors = rng.standard_normal((n, DIM)).astype(np.float32)
        for i in range(n):
            writer.append_row({"id": start + i, "embedding": vectors[i]})
    writer.commit()
    files = [str(Path(f).resolve()) for batch in writer.batch_files for f in batch]
    return files, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", required=True)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--storage-root", type=Path, required=True,
                    help="where the server can read files (its localStorage.path here)")
    args = ap.parse_args()
    connections.connect(uri=args.uri)
    result: dict = {"items": args.items}
    files, result["write_files_s"] = write_files(args.items, args.storage_root)
    result["files"] = files
    name = "bulk_probe"
    if utility.has_collection(name):
        utility.drop_collection(name)
    collection = Collection(name, schema())
    t0 = time.perf_counter()
    task = utility.do_bulk_insert(name, files=files)
    while True:
        state = utility.get_bulk_insert_state(task)
        if state.state_name in ("Completed", "Failed", "ImportCompleted"):
            break
        time.sleep(0.5)
    result["bulk_insert_s"] = time.perf_counter() - t0
    result["state"] = state.state_name
    result["failed_reason"] = state.failed_reason
    collection.flush()
    result["rows"] = collection.num_entities
    # The same rows through insert requests of 16 MB, as ItemStore sends them.
    rows_name = "bulk_probe_rows"
    if utility.has_collection(rows_name):
        utility.drop_collection(rows_name)
    rows_coll = Collection(rows_name, schema())
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    per = (16 << 20) // (DIM * 4 + 16)
    for start in range(1, args.items + 1, per):
        n = min(per, args.items + 1 - start)
        rows_coll.insert([np.arange(start, start + n), rng.standard_normal((n, DIM)).astype(np.float32)])
    rows_coll.flush()
    result["row_insert_s"] = time.perf_counter() - t0
    for n in (name, rows_name):
        utility.drop_collection(n)
    shutil.rmtree(args.storage_root / "bulk", ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
