"""Calling a Prefect server's REST API as the UI does, for the deployment tests."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body: dict | None = None, attempts: int = 20) -> dict:
    """GET (or POST ``body``) and decode the JSON answer, retrying what Prefect asks to."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json"},
    )
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            # Prefect on SQLite answers 503 while its database is locked: retry, as its client.
            if exc.code != 503 or attempt == attempts - 1:
                raise
        time.sleep(0.5)
    raise AssertionError("unreachable")
