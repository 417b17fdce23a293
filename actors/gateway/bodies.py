"""Reading an HTTP request's body within a limit, refusing it where the bytes arrive."""

from __future__ import annotations

from fastapi import Request

__all__ = ["read_body"]


async def read_body(request: Request, limit: int) -> bytes | None:
    """Read ``request``'s body, at most ``limit`` bytes.

    Args:
        request: the HTTP request.
        limit: the largest body accepted, bytes.

    Returns:
        The body, or ``None`` when its ``Content-Length`` says more than ``limit`` (then
        nothing is read) or more than ``limit`` bytes arrive (the rest is never
        buffered). A ``Content-Length`` that is not a number is left to the read.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
