"""Streaming subresources relayed to the kubelet: ``pods/exec`` over websockets.

kube-apiserver proxies an exec to the node's kubelet; the stand-in does the same at the message
level: it opens the kubelet's ``/exec`` websocket with the subprotocol the client negotiated
(``v5.channel.k8s.io``), then copies binary messages both ways until either side closes. A kubelet
that refuses (the container is not running) is answered as kube-apiserver does, before the client's
connection is upgraded.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from .errors import APIError

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


def _negotiate(request: web.Request) -> str:
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    chosen = next((p for p in offered if p in PROTOCOLS), None)
    if chosen is None:
        raise APIError(
            400,
            f"unable to upgrade connection: none of the offered subprotocols {offered} is served; "
            f"the server speaks {', '.join(PROTOCOLS)}",
        )
    return chosen


async def relay(request: web.Request, client: aiohttp.ClientSession, url: str) -> web.StreamResponse:
    protocol = _negotiate(request)
    params = [(k, v) for k, v in request.query.items() if k != "container"]
    try:
        upstream = await client.ws_connect(url, params=params, protocols=(protocol,), autoping=True)
    except aiohttp.WSServerHandshakeError as exc:
        raise APIError(
            500 if exc.status >= 500 else 400, f"unable to upgrade connection: {exc.message or exc.status}"
        ) from exc
    except OSError as exc:
        raise APIError(500, f"error dialing backend: {exc}") from exc
    downstream = web.WebSocketResponse(protocols=(protocol,), autoping=True)
    try:
        await downstream.prepare(request)

        async def pipe(source: Any, sink: Any) -> None:
            async for msg in source:
                if msg.type == WSMsgType.BINARY:
                    await sink.send_bytes(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await sink.send_str(msg.data)

        to_kubelet = asyncio.create_task(pipe(downstream, upstream))
        try:
            await pipe(upstream, downstream)  # ends when the kubelet closes (the command ended)
        finally:
            to_kubelet.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await to_kubelet
    finally:
        await upstream.close()
        await downstream.close()
    return downstream
