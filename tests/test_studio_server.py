"""The studio over real HTTP: uvicorn on 127.0.0.1 and a free port, its worker thread running, event
streams read live; and `nested-diffusion serve` as a process (URL, token, Ctrl-C)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from nested_diffusion.studio.app import create_app
from studio_support import LiveServer, digits, wait_for


@pytest.fixture(scope="module")
def server():
    with LiveServer(create_app(digits())) as live:
        yield live


def stream_events(url, timeout=60.0):
    """(id, type, data) of every event until the server closes the stream (bounded)."""
    events = []
    with httpx.Client(timeout=httpx.Timeout(timeout)) as http, http.stream("GET", url) as r:
        assert r.status_code == 200
        block = []
        for line in r.iter_lines():
            if line:
                block.append(line)
                continue
            fields = dict(item.split(": ", 1) for item in block if not item.startswith((":", "retry")))
            if "data" in fields:
                events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
            block = []
    return events


def test_live_streams_of_concurrent_sessions(server):
    """Frames stream live with rising NFEs, each stream closes when its session is done, and two
    concurrent sessions never see each other's frames."""
    http = httpx.Client(base_url=server.url, timeout=30)
    made = [http.post("/v1/sessions", json={"class_labels": [k], "budget": 20, "seed": k}).json() for k in (2, 8)]
    results = {}

    def read(created):
        results[created["session_id"]] = stream_events(server.url + created["events_url"])

    threads = [threading.Thread(target=read, args=(m,)) for m in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for created in made:
        events = results[created["session_id"]]
        frames = [data for _, kind, data in events if kind == "frame"]
        assert [f["nfe"] for f in frames] == created["checkpoints"] == [2, 10, 20]
        assert all(url.startswith(f"/v1/sessions/{created['session_id']}/") for f in frames for url in f["images"])
        assert events[-1][1:] == ("status", {"branch": "b0", "state": "done", "step": 3, "nfe": 20})
        assert [e[0] for e in events] == list(range(1, len(events) + 1))
    finals = [http.get(results[m["session_id"]][-2][2]["images"][0]).content for m in made]
    assert finals[0] != finals[1]


def test_a_client_that_never_reads_does_not_block_the_worker(server):
    """A stream whose client reads nothing (tiny receive buffer) while 100 frames are produced: the
    session still finishes; read late, the stream has its final state and coalesced frames."""
    http = httpx.Client(base_url=server.url, timeout=30)
    created = http.post("/v1/sessions", json={"class_labels": [5], "outer_steps": 100, "inner_steps": 1,
                                               "num_images": 2}).json()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET {created['events_url']} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    snapshot_url = f"/v1/sessions/{created['session_id']}"
    wait_for(lambda: http.get(snapshot_url).json()["branches"][0]["state"] == "done", 120, what="the session")
    snapshot = http.get(snapshot_url).json()
    assert [f["nfe"] for f in snapshot["branches"][0]["frames"]] == list(range(1, 101))
    sock.settimeout(30)
    data = b""
    while b'"state":"done"' not in data:
        chunk = sock.recv(65536)
        assert chunk, "the stream closed before its final status"
        data += chunk
    sock.close()
    ids = [int(line[4:]) for line in data.decode().splitlines() if line.startswith("id: ")]
    assert ids == sorted(ids) and ids[-1] == snapshot["last_event_id"]


def test_stop_from_another_thread_interrupts_the_running_step(server):
    """Stop, sent while a long step is computed, answers with the last complete frame; the step is
    cancelled within one network call — counted by a forward hook on the network — never shown, and
    its NFEs never counted."""
    http = httpx.Client(base_url=server.url, timeout=30)
    calls = []
    hook = digits().adapter.unet.register_forward_hook(lambda module, args, out: calls.append(time.perf_counter()))
    try:
        created = http.post("/v1/sessions", json={"class_labels": [4], "outer_steps": 2, "inner_steps": 100}).json()
        base = f"/v1/sessions/{created['session_id']}"
        branch = server.app.state.studio.registry.sessions[created["session_id"]].branches["b0"]
        wait_for(lambda: branch.step == 1 and branch.in_flight and len(calls) >= 110, 120, interval=0.001,
                 what="step 2 to be well under way")
        stopped = http.post(f"{base}/branches/b0/stop").json()
        at_stop = len(calls)
        wait_for(lambda: not branch.in_flight, 60, what="the cancelled step to end")
        time.sleep(0.2)
    finally:
        hook.remove()
    assert stopped["state"] == "stopped" and stopped["nfe"] == 100 * stopped["step"] == 100
    assert len(calls) - at_stop <= 1, f"{len(calls) - at_stop} network calls after the stop"
    assert 110 <= at_stop < 200  # the second step really was in flight
    b0 = http.get(base).json()["branches"][0]
    assert (b0["state"], b0["step"], b0["nfe"]) == ("stopped", 1, 100)
    assert [f["nfe"] for f in b0["frames"]] == [100]


def _lines(stream, out: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        out.put(line)


def test_serve_command_prints_its_url_needs_its_token_and_stops_on_ctrl_c():
    token = "studio-test-token-0123456789"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nested_diffusion", "serve", "--port", "0", "--token", token,
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
        first = lines.get(timeout=180)
        assert first.startswith("nested-diffusion studio (embedded digit model on cpu): http://127.0.0.1:")
        url = first.split(": ", 1)[1].strip()
        assert url.endswith(f"/#token={token}")
        base = url.split("#")[0].rstrip("/")
        assert httpx.get(f"{base}/v1/health").status_code == 401
        health = httpx.get(f"{base}/v1/health", headers={"Authorization": f"Bearer {token}"})
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert httpx.get(f"{base}/").status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert "studio stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_serve_refuses_a_busy_port_before_loading_anything(capsys):
    from nested_diffusion.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert main(["serve", "--port", str(busy.getsockname()[1])]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    assert main(["serve", "--token", "short"]) == 2
