"""A webhook receiver for the alert tests, run as its own process on loopback.

``python alert_receiver.py PORT LOG [--delay S] [--fail-first N]`` appends one JSON line per
request to LOG (path, headers, body) and answers 200; ``--delay`` waits before answering,
``--fail-first`` answers 500 to the first N requests (to exercise retries).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("log")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    lock = threading.Lock()
    seen = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                seen["n"] += 1
                fail = seen["n"] <= args.fail_first
                with open(args.log, "a") as fh:
                    fh.write(
                        json.dumps(
                            {
                                "path": self.path,
                                "headers": {k.lower(): v for k, v in self.headers.items()},
                                "body": body.decode(),
                                "answered": 500 if fail else 200,
                            }
                        )
                        + "\n"
                    )
            if args.delay:
                time.sleep(args.delay)
            self.send_response(500 if fail else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
