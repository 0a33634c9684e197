"""A real HTTP file server on 127.0.0.1 for the model-zoo tests: serves byte strings by path, answers Range
requests with 206 (or ignores them, as some servers do), and can break a response off after N bytes."""
from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-")


@dataclass
class ServedFiles:
    """What the server serves and what it saw.

    Args:
        files: URL path -> content.
        cut_after: per request, in order: stop sending after this many body bytes (None: send all).
        honour_range: answer `Range: bytes=N-` with 206; False: always 200 with the whole file.
        requests: (path, Range header or None) of every GET, in order.
    """

    files: dict[str, bytes]
    cut_after: list[int | None] = field(default_factory=list)
    honour_range: bool = True
    requests: list[tuple[str, str | None]] = field(default_factory=list)


def _handler(served: ServedFiles) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            served.requests.append((self.path, self.headers.get("Range")))
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            match = _RANGE.fullmatch(self.headers.get("Range") or "")
            start = int(match.group(1)) if match and served.honour_range else 0
            if start >= len(body) and match and served.honour_range:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            cut = served.cut_after.pop(0) if served.cut_after else None
            part = body[start:] if cut is None else body[start:start + cut]
            self.wfile.write(part)
            if cut is not None:
                self.close_connection = True  # the rest never comes

    return Handler


@contextmanager
def file_server(served: ServedFiles) -> Iterator[str]:
    """Serve `served` on 127.0.0.1 (a free port) while the block runs; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
