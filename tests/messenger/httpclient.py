"""A plain HTTP/1.1 client for the tests (no proxies, no retries, any body)."""

from __future__ import annotations

import http.client
import urllib.parse
from typing import Any

import orjson


def request(
    url: str, method: str = "POST", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    """Send one request; return (status, content type, decoded JSON body or raw bytes)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request(method, u.path or "/", body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        ctype = response.getheader("Content-Type", "")
    finally:
        conn.close()
    data = orjson.loads(raw) if ctype.startswith("application/json") else raw
    return response.status, ctype, data


def post(base: str, message: Any, content_type: str = "application/json") -> tuple[int, Any]:
    body = message if isinstance(message, bytes) else orjson.dumps(message)
    status, _, data = request(base + "/messages", body=body, headers={"Content-Type": content_type})
    return status, data
