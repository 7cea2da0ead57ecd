"""The served hub for the hub tests: tools/start-hub.sh (olah on loopback, serving mirror
repositories of the embedded assets under their real ids), the environment a hub client needs,
the server's request log, and a proxy that answers slowly (as olah does for large files)."""
from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import grids

ROOT = grids.ROOT
REQUEST = re.compile(r'"(GET|HEAD|POST) (\S+) HTTP/[\d.]+" (\d+)')


@dataclass
class Hub:
    dir: Path
    endpoint: str
    mirrors: Path

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request the server has answered, in order."""
        text = (self.dir / "olah.log").read_text(errors="replace")
        return [(m, p, int(s)) for m, p, s in REQUEST.findall(text)]

    def env(self, hf_home: Path) -> dict:
        """A hub client's environment: online, HF_ENDPOINT here, its own HF_HOME."""
        return {**grids.env(), "HF_ENDPOINT": self.endpoint, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
                "HF_HOME": str(hf_home), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

    def stop(self) -> None:
        pid = int((self.dir / "olah.pid").read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def start(dir: Path, *args: str) -> Hub:
    """tools/start-hub.sh DIR ARGS with this interpreter; skips when olah cannot be installed,
    unless CI=true (then the test fails)."""
    # PYTHON relative to the repository, as docs/cluster.md's command gives it
    python = os.path.relpath(sys.executable, ROOT)
    out = subprocess.run(["bash", "tools/start-hub.sh", str(dir), *args], capture_output=True, text=True, timeout=900,
                         cwd=ROOT, env={**os.environ, "PYTHON": python})
    if out.returncode == 3 and os.environ.get("CI") != "true":
        pytest.skip(f"no hub server here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr[-3000:]
    mirrors = Path(args[args.index("--mirrors") + 1]) if "--mirrors" in args else dir / "mirrors"
    return Hub(dir, out.stdout.strip().splitlines()[-1], mirrors)


class SlowProxy:
    """A forwarding proxy in front of `upstream` that holds each request whose path matches
    `slow` for `delay` seconds before answering, as a mirror reading a large file does."""

    def __init__(self, upstream: str, slow: str, delay: float):
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                if re.search(slow, self.path):
                    time.sleep(delay)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() == "location":
                        v = v.replace(upstream, proxy.endpoint)
                    if k.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    while chunk := resp.read(1 << 20):
                        self.wfile.write(chunk)
                conn.close()

            do_GET = do_HEAD = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
