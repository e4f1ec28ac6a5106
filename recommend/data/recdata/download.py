"""Cached, resumable HTTP(S) download (HTTP Range), and file:// URLs read in place."""

from __future__ import annotations

import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """The download could not be completed (after retries)."""


def cached_path(url: str, cache: Path) -> Path:
    """Where the finished download of `url` is kept."""
    name = Path(urlparse(url).path).name or "download"
    return cache / name


def fetch(url: str, cache: Path, retries: int = 3, timeout: float = 60.0) -> Path:
    """Local path of `url`'s content: file:// as is; http(s) downloaded once into `cache`.

    An interrupted transfer leaves `<name>.part`; the next attempt (in this run or a later one)
    asks for the remaining bytes with a Range header and appends them. A server that ignores
    Range (answers 200) makes us start over rather than append a second copy.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        if not path.is_file():
            raise DownloadError(f"{url}: no such file")
        return path
    if parsed.scheme not in ("http", "https"):
        raise DownloadError(f"{url}: expected an http://, https:// or file:// URL")
    dest = cached_path(url, cache)
    source = dest.with_name(dest.name + ".url")
    if dest.is_file() and source.is_file() and source.read_text().strip() == url:
        print(f"using cached {dest}")
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if part.is_file() and (not source.is_file() or source.read_text().strip() != url):
        part.unlink()  # a partial download of another URL cannot be resumed
    source.write_text(url + "\n")
    last: Exception | None = None
    for attempt in range(1, retries + 1):
        try:
            _download_once(url, part, timeout)
            os.replace(part, dest)
            return dest
        except (urllib.error.URLError, http.client.HTTPException, OSError, DownloadError) as exc:
            last = exc
            have = part.stat().st_size if part.exists() else 0
            print(
                f"download attempt {attempt}/{retries} failed ({exc}); {have} bytes kept",
                file=sys.stderr,
            )
            if isinstance(exc, urllib.error.HTTPError) and exc.code == 404:
                break
            time.sleep(min(2.0 ** (attempt - 1), 10.0) * 0.1)
    have = part.stat().st_size if part.exists() else 0
    # Resuming is only worth mentioning when there is something to resume from.
    then = (f"{have:,} bytes kept: rerun to resume from {part}" if have
            else "nothing was received (offline?): rerun when the network is back")
    raise DownloadError(f"could not download {url}: {last}; {then}; "
                        "or work offline on generated data: sh data.sh synthetic")


def _download_once(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # our .part is not a prefix the server recognises
            part.unlink()
            raise DownloadError("server refused the resume range; starting over") from exc
        raise
    with resp:
        if resp.status == 206:
            content_range = resp.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                part.unlink()
                raise DownloadError(f"unexpected Content-Range {content_range!r}; starting over")
            mode = "ab"
            total = int(content_range.rsplit("/", 1)[-1]) if "/" in content_range else None
        else:
            mode, have = "wb", 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length else None
        if have:
            print(f"resuming {url} at byte {have}")
        with open(part, mode) as out:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"connection closed at {size} of {total} bytes")
