"""A cheap scraper for the endpoint tests: raw HTTP/1.0 GETs in a loop, in its own process.

    python -I -S scraper.py HOST PORT PATH SECONDS [THREADS] [ACCEPT ...]

Prints one JSON line: ``{"ok": 200 answers, "failed": others, "seconds": elapsed}``.
Several Accept headers are used in turn. Standard library only, so it starts in
milliseconds with ``-I -S`` and never needs the tested process's GIL.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time


def main(argv: list[str]) -> None:
    host, port, path, seconds = argv[0], int(argv[1]), argv[2], float(argv[3])
    threads = int(argv[4]) if len(argv) > 4 else 1
    accepts = argv[5:] or [""]
    requests = [
        f"GET {path} HTTP/1.0\r\nHost: {host}\r\n".encode()
        + (f"Accept: {a}\r\n".encode() if a else b"")
        + b"\r\n"
        for a in accepts
    ]
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop(offset: int) -> None:
        ok = failed = 0
        i = offset
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host, port), timeout=10) as s:
                    s.sendall(requests[i % len(requests)])
                    head = s.recv(65536)
                    while s.recv(65536):
                        pass
                ok, failed = (ok + 1, failed) if head[9:12] == b"200" else (ok, failed + 1)
            except OSError:
                failed += 1
            i += 1
        with lock:
            counts["ok"] += ok
            counts["failed"] += failed

    t0 = time.monotonic()
    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({**counts, "seconds": time.monotonic() - t0}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
