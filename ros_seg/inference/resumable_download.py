"""Download one file over HTTP(S) into a `.part` file that a later call resumes with an HTTP Range request.

The bytes go to `PART` as they arrive; the file is complete when the server's length is reached
(Content-Length, or the total of Content-Range). A connection that ends early leaves `PART` for the
next attempt, which asks for `Range: bytes=N-` and appends when the server answers 206 with a
matching Content-Range; a server that answers 200 instead (no range support) sends the whole file
again and `PART` starts over. A progress bar (tqdm) goes to stderr.
"""
from __future__ import annotations

import http.client
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20
TIMEOUT_S = 60.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadInterrupted(OSError):
    """The transfer ended before the whole file arrived; the `.part` file keeps what came."""


class DownloadRefused(OSError):
    """The server refused the request (HTTP error, or an answer this client cannot use)."""


def _expected_total(response: http.client.HTTPResponse, offset: int, url: str) -> int | None:
    """Total size of the file from a 200 or 206 answer (None if the server does not say)."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if not match or int(match.group(1)) != offset:
            raise DownloadRefused(f"{url} answered a range request from byte {offset} with Content-Range "
                                  f"{response.headers.get('Content-Range')!r}")
        return int(match.group(3)) if match.group(3) != "*" else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def download_part(url: str, part: Path, progress: bool = True,
                  on_response: Callable[[int, int | None], None] | None = None) -> int:
    """Fetch `url` into `part`, resuming from the bytes `part` already holds; the file's size in bytes.

    `on_response(offset, total)` is called once the server has answered (offset: bytes kept from
    before). DownloadInterrupted when the connection ends early (`part` keeps the bytes received),
    DownloadRefused for an HTTP error or an unusable answer.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "ros_seg-zoo"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the range starts at or past the end: begin again
            part.unlink()
            return download_part(url, part, progress, on_response)
        raise DownloadRefused(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadInterrupted(f"cannot reach {url}: {reason}") from None
    with response:
        if response.status == 200:
            offset = 0  # the whole file comes again
        total = _expected_total(response, offset, url)
        if on_response is not None:
            on_response(offset, total)
        received = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                   desc=part.name.removesuffix(".part"), disable=not progress, leave=False)
        try:
            with open(part, "ab" if offset else "wb") as out:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (TimeoutError, http.client.IncompleteRead, ConnectionError) as exc:
                        raise DownloadInterrupted(f"the transfer of {url} broke off after {received} of "
                                                  f"{total if total is not None else '?'} bytes ({exc!r})") from None
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
        finally:
            bar.close()
    if total is not None and received < total:
        raise DownloadInterrupted(f"the transfer of {url} ended after {received} of {total} bytes")
    if total is not None and received > total:
        part.unlink()
        raise DownloadRefused(f"{url} sent {received} bytes, more than the {total} it announced")
    return received
