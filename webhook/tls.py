"""Serving TLS (1.2+) with the certificate and key reloaded when their files change.

The listening socket keeps one :class:`ssl.SSLContext`; its server-name callback, which OpenSSL runs
at the start of every handshake (with or without SNI), switches the connection to the context
built from the newest good certificate. A new pair is loaded into a fresh context first, so a
half-written rotation (new certificate, old key) is rejected and the previous pair keeps serving.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
from collections.abc import Callable

from cryptography import x509

from .logs import logger

Stamp = tuple[tuple[int, int, int], ...]


class TLSError(RuntimeError):
    """The certificate or key cannot be loaded; the message names the files."""


def _stamp(*paths: str) -> Stamp:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((0, 0, 0))
        else:
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class ReloadingTLS:
    """Owns the server context; :meth:`watch` polls the files and swaps in a new pair when they change."""

    def __init__(
        self,
        cert_file: str,
        key_file: str,
        *,
        interval: float = 2.0,
        on_reload: Callable[[bool], None] | None = None,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.interval = interval
        self._on_reload = on_reload
        self._stamp = _stamp(cert_file, key_file)
        self._failed: Stamp = ()
        self._current, self.not_after = self._build()
        self.context = self._new_context()
        self.context.load_cert_chain(cert_file, key_file)
        self.context.sni_callback = self._select
        self.reloads = 0

    @staticmethod
    def _new_context() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def _build(self) -> tuple[ssl.SSLContext, datetime.datetime]:
        ctx = self._new_context()
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
            with open(self.cert_file, "rb") as handle:
                cert = x509.load_pem_x509_certificate(handle.read())
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TLSError(
                f"cannot load the serving certificate {self.cert_file} with key {self.key_file}: {exc}; "
                f"check that both files exist, are PEM, and belong together"
            ) from None
        return ctx, cert.not_valid_after_utc

    def _select(self, conn: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        if conn.context is not self._current:
            conn.context = self._current

    @property
    def valid(self) -> bool:
        """False once the certificate being served has expired."""
        return datetime.datetime.now(datetime.UTC) < self.not_after

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed; True when a new pair is now served."""
        stamp = _stamp(self.cert_file, self.key_file)
        if stamp in (self._stamp, self._failed):
            return False
        try:
            ctx, not_after = self._build()
        except TLSError as exc:
            self._failed = stamp
            # Likely mid-rotation (one file written, not yet the other): keep serving, retry next poll.
            logger().warning("certificate reload failed, still serving the previous one", extra={"error": str(exc)})
            if self._on_reload:
                self._on_reload(False)
            return False
        self._stamp = stamp
        self._current, self.not_after = ctx, not_after
        self.reloads += 1
        logger().info(f"serving a new certificate (valid until {not_after.isoformat()})")
        if self._on_reload:
            self._on_reload(True)
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.reload_if_changed()
