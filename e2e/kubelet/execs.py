"""``kubectl exec`` on the process runtime: the kubelet's ``/exec/<ns>/<pod>/<container>`` endpoint.

The streaming protocol is Kubernetes' websocket remote command protocol (``v5.channel.k8s.io``, and
``v4.channel.k8s.io``): every binary message starts with its channel, 0 stdin, 1 stdout, 2 stderr,
3 error (one ``metav1.Status`` when the command ends), 4 terminal resize; in v5 the message
``[255, channel]`` half-closes a channel (the client's end of stdin). The command runs as a process
with the container's environment and CDI edits (the same as the container's own process: the env
the devices give, ``LD_PRELOAD``, paths mapped through the mounts) in the container's working
directory. There is no terminal: with ``tty`` the output comes through a pipe, stdout and stderr
together, as a terminal would mix them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger("e2e.kubelet.exec")

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "") in ("1", "true", "True", "t", "T", "TRUE")


def exit_status(argv: Sequence[str], code: int) -> dict[str, Any]:
    """The Status the error channel carries when the command ends (what kubectl turns into its exit code)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command {list(argv)}, "
        f"exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def failure(message: str) -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500}


async def serve(
    request: web.Request, argv: Sequence[str], env: Mapping[str, str], cwd: str, tag: str
) -> web.WebSocketResponse:
    """Run ``argv`` and stream it over the websocket of ``request`` (already checked by the caller)."""
    query = request.query
    want_stdin, tty = _flag(query, "stdin") or _flag(query, "input"), _flag(query, "tty")
    want_out = _flag(query, "stdout") or _flag(query, "output") or "stdout" not in query
    want_err = (_flag(query, "stderr") or _flag(query, "error")) and not tty
    ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True, heartbeat=None)
    await ws.prepare(request)
    send_lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        async with send_lock:
            if not ws.closed:
                await ws.send_bytes(bytes([channel]) + data)

    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if tty else asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        log.info("%s: exec %s failed: %s", tag, list(argv), exc)
        await send(ERROR, json.dumps(failure(f"cannot run {argv[0]!r} in the container: {exc}")).encode())
        await ws.close()
        return ws
    log.info("%s: exec %s (pid %d)", tag, list(argv), proc.pid)

    async def pump(stream: asyncio.StreamReader | None, channel: int, forward: bool) -> None:
        if stream is None:
            return
        while chunk := await stream.read(32 * 1024):
            if forward:
                await send(channel, chunk)

    async def from_client() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            data: bytes = msg.data
            if data[0] == STDIN and proc.stdin is not None:
                with contextlib.suppress(ConnectionError):
                    proc.stdin.write(data[1:])
                    await proc.stdin.drain()
            elif data[0] == CLOSE and data[1:2] == bytes([STDIN]) and proc.stdin is not None:
                proc.stdin.close()
        # the client went away: the command goes with it
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    reader = asyncio.create_task(from_client())
    try:
        await asyncio.gather(pump(proc.stdout, STDOUT, want_out), pump(proc.stderr, STDERR, want_err))
        code = await proc.wait()
        code = 128 - code if code < 0 else code
        await send(ERROR, json.dumps(exit_status(argv, code)).encode())
        log.info("%s: exec %s exited with %d", tag, list(argv), code)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        await ws.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return ws
