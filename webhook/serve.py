"""``python -m webhook serve``: wire the converter, the API client, TLS and metrics, and run until signalled."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal

from aiohttp import web

from kubeapi import KubeClient
from tessera_common.flags import parse_bool

from . import logs
from .cli import UsageError, converter_from_args
from .ledger import LedgerStore
from .metrics import Metrics
from .quota import Catalog
from .quota_controller import QuotaController
from .server import Webhook
from .templates import TemplateStore
from .tls import ReloadingTLS, TLSError


async def serve(args: argparse.Namespace, *, stop: asyncio.Event | None = None) -> None:
    if not args.tls_cert_file or not args.tls_key_file:
        raise UsageError(
            "serve needs --tls-cert-file and --tls-key-file (or TESSERA_TLS_CERT_FILE/TESSERA_TLS_KEY_FILE)"
        )
    converter = converter_from_args(args)
    try:
        quota = parse_bool(str(args.quota))
    except ValueError as exc:
        raise UsageError(f"--quota {exc}") from None
    if quota and not args.quota_namespace:
        raise UsageError("--quota true needs --quota-namespace (or TESSERA_QUOTA_NAMESPACE): where the ledgers live")
    metrics = Metrics()
    try:
        tls = ReloadingTLS(
            args.tls_cert_file,
            args.tls_key_file,
            interval=args.tls_reload_seconds,
            on_reload=lambda ok: metrics.tls_reloads.labels("ok" if ok else "failed").inc(),
        )
    except TLSError as exc:
        raise UsageError(str(exc)) from None
    try:
        client = await KubeClient.connect(args.kubeconfig, timeout=max(1.0, args.api_deadline_seconds))
    except Exception as exc:  # kubeconfig / in-cluster loading raise many kinds
        where = args.kubeconfig or "the in-cluster service account"
        raise UsageError(f"cannot configure the Kubernetes client from {where}: {exc}") from None
    log = logs.logger()
    runner: web.AppRunner | None = None
    try:
        templates = TemplateStore(
            client, metrics, deadline=args.api_deadline_seconds, cache_seconds=args.template_cache_seconds
        )
        webhook = Webhook(
            converter,
            client=client,
            metrics=metrics,
            templates=templates,
            tls=tls,
            inventory_refresh=args.inventory_refresh_seconds,
        )
        if quota:
            webhook.quota = QuotaController(
                client,
                Catalog(converter.vendors.values()),
                LedgerStore(client, args.quota_namespace, metrics, deadline=args.api_deadline_seconds),
                metrics,
                inventory=lambda: webhook.inventory,
                resync=args.quota_resync_seconds,
                grace=args.quota_grace_seconds,
                pending=args.quota_pending_seconds,
            )
        runner = web.AppRunner(webhook.app(), access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, ssl_context=tls.context, reuse_address=True)
        await site.start()
        log.info(
            f"serving https://{args.host}:{args.port}/mutate for vendors {','.join(converter.vendors)} "
            f"({converter.policy}, opt-out namespaces {','.join(sorted(converter.opt_out_namespaces)) or 'none'}, "
            f"default scheduling policies node={converter.scheduling.node or 'none'} "
            f"gpu={','.join(converter.scheduling.gpu) or 'none'}, "
            f"quota {'ledgers in ' + args.quota_namespace if quota else 'off'}, API {client.host})"
        )
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        if runner is not None:
            await runner.cleanup()
        await client.close()


def run_serve(args: argparse.Namespace) -> int:
    logs.setup(args.log_format, args.log_level)
    # Everything imported so far (modules, the client's generated models: some 80,000 objects) lives
    # as long as the process: keep it out of the cyclic collector, whose full passes over it took
    # 70 ms here and would show up as latency spikes in reviews.
    gc.freeze()
    asyncio.run(serve(args))
    return 0
