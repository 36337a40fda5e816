"""A real pod stopped with connections in every state: held requests, an idle keep-alive, a stalled upload."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from serving import settings as serving_settings
from tests.support.pods import ServingPod, refused_start

pytestmark = pytest.mark.integration


def _read_all(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything until the server closes the connection, and when it did."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data, time.monotonic()


def test_sigterm_closes_idle_connections_ends_stalled_uploads_and_answers_held_requests(
    tiny_bert: Path,
) -> None:
    env = {
        "CARPOOL_WORKERS": "2",
        "BATCHING_STRATEGY": "batch_optimized",
        "MAX_WAIT_TIME_MS": "20000",
        "MIN_BATCH_SIZE": "64",
        "MAX_BATCH_SIZE": "64",
        "ENABLE_LOGGING": "false",
        "CARPOOL_ADMIN_TOKEN": "s3cret\n",  # as `kubectl create secret --from-file` leaves it
    }
    with ServingPod(models={"tiny": tiny_bert}, env=env) as pod:
        configured = httpx.post(
            f"{pod.url}/batching/configure",
            json={"max_queue_size": 512},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert configured.status_code == 200, configured.text
        idle = socket.create_connection((pod.host, pod.port))
        idle.sendall(f"GET /livez HTTP/1.1\r\nHost: {pod.host}\r\n\r\n".encode())
        first = b""
        while not first.endswith(b'{"status":"alive"}'):
            first += idle.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")  # kept alive, now idle
        stalled = socket.create_connection((pod.host, pod.port))
        stalled.sendall(
            b"POST /predict HTTP/1.1\r\nHost: pod\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"text": "hel'  # 14 of 100 bytes, then nothing
        )

        def ask(i: int) -> int:
            with httpx.Client(base_url=pod.url, timeout=30) as client:
                return client.post("/predict", json={"text": f"held request {i}"}).status_code

        with concurrent.futures.ThreadPoolExecutor(10) as threads:
            held = [threads.submit(ask, i) for i in range(10)]
            deadline = time.monotonic() + 10
            while httpx.get(f"{pod.url}/batching/stats").json()["models"]["tiny"]["queue"]["size"] < 10:
                assert time.monotonic() < deadline, "ten requests never queued"
                time.sleep(0.05)
            assert pod.process is not None
            stopped_at = time.monotonic()
            pod.process.send_signal(signal.SIGTERM)
            statuses = [answer.result(timeout=10) for answer in held]
            answered_at = time.monotonic()
            idle_data, idle_closed_at = _read_all(idle, 10)
            stalled_data, stalled_closed_at = _read_all(stalled, 15)
            code = pod.process.wait(20)
            exited_at = time.monotonic()
    assert statuses == [200] * 10
    assert answered_at - stopped_at < 2.0
    assert idle_data == b"" and idle_closed_at - stopped_at < 2.0
    assert stalled_data.startswith(b"HTTP/1.1 408")
    assert b'"error":"RequestTimeout"' in stalled_data
    assert stalled_closed_at - stopped_at < serving_settings.BODY_IDLE_TIMEOUT_S + 2.0
    assert code == 0
    assert exited_at - stopped_at < serving_settings.BODY_IDLE_TIMEOUT_S + 5.0


def test_a_blank_admin_token_stops_the_pod_before_it_serves(tiny_bert: Path) -> None:
    done = refused_start(tiny_bert, {"CARPOOL_ADMIN_TOKEN": " \n"})
    assert done.returncode == 2
    assert "CARPOOL_ADMIN_TOKEN is set but blank" in done.stderr


def test_a_pod_without_an_admin_token_says_so_at_start(tiny_bert: Path) -> None:
    env = {"CARPOOL_WORKERS": "1", "ENABLE_LOGGING": "false"}
    with ServingPod(models={"tiny": tiny_bert}, env=env) as pod:
        assert "CARPOOL_ADMIN_TOKEN is not set" in pod.output()
