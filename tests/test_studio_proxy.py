"""Beyond one machine: two `nested-diffusion serve --node …` processes behind a real nginx (Debian's,
`apt-get install nginx-light`; .ci/run installs it) running docs/deploy/nginx.conf — sessions created
through the proxy land on both servers and are served by their own, and when both are full the 429's
Retry-After, honoured, gets the client a session."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from studio_support import wait_for

CONFIG = Path(__file__).resolve().parents[1] / "docs" / "deploy" / "nginx.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        reason = "nginx is not installed (apt-get install -y nginx-light)"
        if os.environ.get("NESTED_DIFFUSION_REQUIRE_BROWSER") == "1":  # .ci/run installs it with Chromium
            pytest.fail(f"NESTED_DIFFUSION_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return found


class Serve:
    """`nested-diffusion serve` as its own process on 127.0.0.1:port."""

    def __init__(self, port: int, node: str, *extra: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "nested_diffusion", "serve", "--port", str(port),
                                      "--node", node, "--device", "cpu", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"

    def ready(self) -> None:
        line = self.lines.get(timeout=180)
        assert "nested-diffusion studio" in line, line

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


#: the servers' --idle-timeout (s): short, so the 429 part below waits little, yet longer than a busy machine
#: needs between a stream's end and the checks of its session
IDLE = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    binary = nginx_binary()
    prefix = tmp_path_factory.mktemp("nginx")
    ports = [free_port() for _ in range(3)]
    servers = [Serve(ports[1], "n1", "--max-sessions", "2", "--idle-timeout", str(IDLE)),
               Serve(ports[2], "n2", "--max-sessions", "2", "--idle-timeout", str(IDLE))]
    config = CONFIG.read_text().replace("/var/lib/nested-diffusion-nginx", str(prefix))
    for example, port in zip(("7860", "7861", "7862"), ports):
        config = config.replace(f"127.0.0.1:{example}", f"127.0.0.1:{port}")
    (prefix / "nginx.conf").write_text(config)
    proxy = subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for s in servers:
            s.ready()
        url = f"http://127.0.0.1:{ports[0]}"
        wait_for(lambda: _up(url), 30, what="nginx")
        yield url, servers
    finally:
        proxy.send_signal(signal.SIGQUIT)
        try:
            proxy.wait(15)
        except subprocess.TimeoutExpired:
            proxy.kill()
        for s in servers:
            s.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def events(url: str) -> list[tuple[str, dict]]:
    out = []
    with httpx.Client(timeout=120) as http, http.stream("GET", url) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


def create(http: httpx.Client, body: dict, honour_retry_after: bool = False) -> httpx.Response:
    """POST /v1/sessions; on 429 with ``honour_retry_after``, wait Retry-After seconds and retry (bounded)."""
    for _ in range(5):
        r = http.post("/v1/sessions", json=body)
        if r.status_code != 429 or not honour_retry_after:
            return r
        time.sleep(float(r.headers["retry-after"]))
    return r


def test_sessions_live_on_their_server_behind_the_proxy(cluster):
    url, servers = cluster
    http = httpx.Client(base_url=url, timeout=60)
    assert http.get("/").status_code == 200 and "data-testid=\"start\"" in http.get("/").text
    made = [create(http, {"class_labels": [k], "budget": 10, "seed": k}) for k in range(4)]
    assert [r.status_code for r in made] == [201] * 4
    ids = [r.json()["session_id"] for r in made]
    assert sorted(i.split("-", 1)[0] for i in ids) == ["n1", "n1", "n2", "n2"]  # a full server sent the rest on
    with ThreadPoolExecutor(len(ids)) as pool:  # every session has its client at once: none sits idle meanwhile
        streams = list(pool.map(events, [f"{url}/v1/sessions/{sid}/events" for sid in ids]))  # through the proxy
    for sid, stream in zip(ids, streams):
        frames = [d for kind, d in stream if kind == "frame"]
        assert [f["nfe"] for f in frames] == [1, 2, 3, 5, 8, 10] and stream[-1][1]["state"] == "done"
        own = servers[0] if sid.startswith("n1-") else servers[1]
        png = http.get(frames[-1]["images"][0])
        assert png.status_code == 200 and png.content == httpx.get(own.url + frames[-1]["images"][0]).content
        other = servers[1] if own is servers[0] else servers[0]
        assert httpx.get(f"{other.url}/v1/sessions/{sid}").status_code == 404  # it lives on one server only
        assert http.post(f"/v1/sessions/{sid}/branches/b0/stop", headers={"Origin": url}).status_code == 200

    # both servers full: the client gets a 429 with Retry-After through the proxy, honours it, and gets in
    full = create(http, {"class_labels": [1], "budget": 4})
    assert full.status_code == 429 and 1 <= int(full.headers["retry-after"]) <= IDLE and "error" in full.json()
    start = time.monotonic()
    later = create(http, {"class_labels": [1], "budget": 4}, honour_retry_after=True)
    assert later.status_code == 201 and time.monotonic() - start >= 1  # after idle sessions expired
    assert http.delete(f"/v1/sessions/{later.json()['session_id']}").status_code == 204
    assert http.get(f"/v1/sessions/{later.json()['session_id']}").status_code == 404
