"""`caikit serve` under clients that misbehave: torn requests, clients that hang up before the reply,
and a long run of requests; the server keeps answering everyone else, and its memory stays bounded."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlparse

import httpx

from caikit.serve import create_app
from caikit.serving import Running

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 6, "temperature": 0}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def vanish(host: str, port: int, kind: str) -> None:
    """A client that sends part of a request, or a whole one, and hangs up without reading the reply."""
    body = httpx.Request("POST", f"http://{host}:{port}/v1/chat/completions", json=CHAT)
    payload = b"".join(body.stream)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(head + (payload[: len(payload) // 2] if kind == "torn" else payload))


def test_clients_that_hang_up_do_not_stop_the_server(tiny_backend):
    with Running(create_app(tiny_backend, name="tiny", window=0.01)) as url:
        expected = httpx.post(f"{url}/chat/completions", json=CHAT, timeout=60).json()["choices"][0]["message"]["content"]
        where = urlparse(url)
        vanishing = [threading.Thread(target=vanish, args=(where.hostname, where.port, kind)) for kind in ("torn", "whole") * 8]
        for t in vanishing:
            t.start()
        replies = []
        with httpx.Client(timeout=60) as client:  # meanwhile, an ordinary client
            for _ in range(6):
                replies.append(client.post(f"{url}/chat/completions", json=CHAT).json()["choices"][0]["message"]["content"])
        for t in vanishing:
            t.join()
        assert replies == [expected] * 6
        assert httpx.get(url.removesuffix("/v1") + "/health", timeout=10).status_code == 200
        after = httpx.post(f"{url}/chat/completions", json=CHAT, timeout=60).json()["choices"][0]["message"]["content"]
        assert after == expected


def test_memory_stays_bounded_over_a_thousand_requests(tiny_backend):
    small = {**CHAT, "max_tokens": 2}
    with Running(create_app(tiny_backend, name="tiny", window=0.002)) as url:

        def send(n: int, failures: list):
            with httpx.Client(timeout=60) as client:
                for _ in range(n):
                    if client.post(f"{url}/chat/completions", json=small).status_code != 200:
                        failures.append(1)

        def burst(total: int) -> list:
            failures: list = []
            workers = [threading.Thread(target=send, args=(total // 8, failures)) for _ in range(8)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return failures

        assert burst(200) == []  # warm-up: allocator pools, caches
        before = rss_mb()
        assert burst(1000) == []
        grown = rss_mb() - before
        print(f"resident memory {before:.0f} MB -> {rss_mb():.0f} MB over 1,000 requests")
    assert grown < 64, f"resident memory grew by {grown:.0f} MB over 1,000 requests"
