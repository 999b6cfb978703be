"""The benchmarks' HTTP/1.1 client: keep-alive connections and pre-encoded requests, light enough that the
load generator is not the bottleneck on a 2-core machine."""

from __future__ import annotations

import asyncio


def request(port: int, body: bytes, content_type: str, path: str = "/api/v1/events") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def get(port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes) -> int:
    """Send one request on an open connection, read the whole response, return its status."""
    status, _ = await exchange_body(reader, writer, message)
    return status


async def exchange_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes
) -> tuple[int, bytes]:
    """Send one request on an open connection; (status, body)."""
    writer.write(message)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await reader.readexactly(length) if length else b""
    return status, body
