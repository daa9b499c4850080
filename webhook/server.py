"""The admission server: ``POST /mutate`` (pods), ``POST /validate`` (resource claims, for the quota),
``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

Every request to ``/mutate`` is answered with HTTP 200 and a well-formed AdmissionReview, whatever
it carried: a malformed review is denied with the reason, an internal error is denied and logged
with its traceback, never a 500 that kube-apiserver would have to interpret.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from kubeapi import KubeClient, KubeError
from tessera_common.tasks import cancel_and_wait

from . import inventory as inventory_mod
from . import review as rv
from .convert import Converter
from .inventory import Inventory, InventoryError
from .logs import logger
from .metrics import ALLOWED, DENIED, ERROR, INVALID, MUTATED, UNAVAILABLE, Metrics
from .quota_controller import QuotaController
from .templates import EnsureError, TemplateStore
from .tls import ReloadingTLS

MAX_BODY = 8 * 1024 * 1024
Answer = tuple[dict[str, Any], str, tuple[str, ...]]
"""The review to send back, its outcome (for metrics) and the vendors involved."""
Handler = Callable[[rv.Review, dict[str, Any]], Awaitable[Answer]]
READY_CACHE_SECONDS = 2.0


class Webhook:
    """The handlers and background tasks of one server; :meth:`app` builds the aiohttp application."""

    def __init__(
        self,
        converter: Converter,
        *,
        client: KubeClient | None,
        metrics: Metrics | None = None,
        templates: TemplateStore | None = None,
        tls: ReloadingTLS | None = None,
        inventory: Inventory | None = None,
        inventory_refresh: float = 30.0,
        quota: QuotaController | None = None,
    ) -> None:
        self.converter = converter
        self.client = client
        self.metrics = metrics or Metrics()
        self.templates = templates or (TemplateStore(client, self.metrics) if client else None)
        self.tls = tls
        self.inventory = inventory
        self.inventory_refresh = inventory_refresh
        self.quota = quota
        self._api_ok_at = 0.0
        self._ready_lock = asyncio.Lock()

    # --- application ----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/mutate", self.mutate)
        app.router.add_post("/validate", self.validate)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_page)
        app.cleanup_ctx.append(self._background)
        return app

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        if self.tls is not None:
            tasks.append(asyncio.create_task(self.tls.watch(), name="tls-watch"))
        if self.client is not None and self.inventory_refresh > 0:
            tasks.append(asyncio.create_task(self._refresh_inventory(), name="inventory"))
        if self.quota is not None:
            tasks.append(asyncio.create_task(self.quota.run(), name="quota"))
        yield
        await cancel_and_wait(tasks)

    async def load_inventory(self) -> bool:
        """Read the ResourceSlices once; keeps the previous inventory when that fails."""
        if self.client is None:
            return False
        try:
            inv = await inventory_mod.fetch(self.client)
        except (KubeError, InventoryError, ValueError) as exc:
            logger().warning("cannot read the device inventory; keeping the previous one", extra={"error": str(exc)})
            return False
        self._api_ok_at = time.monotonic()
        if self.inventory is None or len(inv) != len(self.inventory):
            logger().info(f"device inventory: {len(inv)} devices")
        self.inventory = inv
        self.metrics.inventory_devices.set(len(inv))
        return True

    async def _refresh_inventory(self) -> None:
        while True:
            await self.load_inventory()
            await asyncio.sleep(self.inventory_refresh)

    # --- probes ------------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        problems = []
        if self.tls is not None and not self.tls.valid:
            problems.append(f"the serving certificate expired at {self.tls.not_after.isoformat()}")
        if self.client is not None and not await self._api_answers():
            problems.append(f"the Kubernetes API server at {self.client.host} does not answer")
        if problems:
            return web.Response(status=503, text="not ready: " + "; ".join(problems) + "\n")
        return web.Response(text="ok\n")

    async def _api_answers(self) -> bool:
        if self.client is None:
            return True
        async with self._ready_lock:
            if time.monotonic() - self._api_ok_at < READY_CACHE_SECONDS:
                return True
            try:
                await self.client.request("GET", "/version", timeout=1.0)
            except (KubeError, ValueError):
                return False
            self._api_ok_at = time.monotonic()
            return True

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})

    # --- admission ---------------------------------------------------------------------------------

    async def mutate(self, request: web.Request) -> web.Response:
        return await self._serve(request, self._answer)

    async def validate(self, request: web.Request) -> web.Response:
        return await self._serve(request, self._validate)

    async def _serve(self, request: web.Request, handler: Handler) -> web.Response:
        start = time.perf_counter()
        vendors: tuple[str, ...] = ()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            answer, outcome = rv.denial("", f"the review is larger than {MAX_BODY} bytes"), INVALID
        else:
            answer, outcome, vendors = await self.answer(body, handler)
        self.metrics.review(outcome, vendors, time.perf_counter() - start)
        return web.Response(body=rv.encode(answer), content_type="application/json")

    async def answer(self, body: bytes, handler: Handler | None = None) -> Answer:
        """The review to send back, its outcome (for metrics) and the vendors involved (``handler``: the
        endpoint's, ``/mutate``'s by default)."""
        try:
            review = rv.parse(body)
        except rv.ReviewError as exc:
            logger().warning(f"malformed review: {exc}", extra={"uid": exc.uid})
            return rv.denial(exc.uid, f"malformed AdmissionReview: {exc}"), INVALID, ()
        who = "claim" if review.resource == rv.CLAIMS else "pod"
        extra = {"namespace": review.namespace, who: review.name, "uid": review.uid}
        try:
            return await (handler or self._answer)(review, extra)
        except Exception as exc:  # a bug: deny (the pod is not lost, the user can retry) and say where to look
            logger().exception("internal error while converting the pod", extra=extra)
            message = (
                f"internal error in the Tessera webhook ({type(exc).__name__}); the {who} was not admitted, "
                f"see the webhook log for uid {review.uid}"
            )
            return rv.denial(review.uid, message, rv.INTERNAL_ERROR), ERROR, ()

    async def _answer(self, review: rv.Review, extra: dict[str, Any]) -> Answer:
        if review.adds_ephemeral:
            # kubectl debug: checked, never converted or patched (the pod was converted at creation).
            result = self.converter.check_ephemeral(review.obj, review.old_obj)
            if not result.allowed:
                logger().info(f"denied: {result.message}", extra=extra)
                return rv.denial(review.uid, result.message), DENIED, ()
            return rv.allowed(review.uid), ALLOWED, ()
        if not review.is_pod or review.operation != "CREATE":
            return rv.allowed(review.uid), ALLOWED, ()
        result = self.converter.convert(review.obj, review.namespace, self.inventory)
        if not result.allowed:
            logger().info(f"denied: {result.message}", extra={**extra, "vendors": ",".join(result.vendors)})
            return rv.denial(review.uid, result.message), DENIED, result.vendors
        if not result.patch:
            return rv.allowed(review.uid, warnings=result.warnings), ALLOWED, result.vendors
        if result.template is not None and not review.dry_run:
            if self.templates is None:
                message = "the webhook has no Kubernetes API access configured, so it cannot create the claim template"
                return rv.denial(review.uid, message, rv.UNAVAILABLE), UNAVAILABLE, result.vendors
            try:
                await self.templates.ensure(result.template, extra)
            except EnsureError as exc:
                logger().warning(f"denied: {exc}", extra=extra)
                code = rv.UNAVAILABLE if exc.unavailable else rv.BAD_REQUEST
                return rv.denial(review.uid, str(exc), code), UNAVAILABLE, result.vendors
        if result.template is not None and self.quota is not None:
            verdict = await self.quota.check_pod(
                review.namespace,
                review.name,
                result.template["spec"]["spec"],
                review_uid=review.uid,
                dry_run=review.dry_run,
                log=extra,
            )
            if not verdict.allowed:
                outcome = UNAVAILABLE if verdict.unavailable else DENIED
                return rv.denial(review.uid, verdict.message, verdict.code), outcome, result.vendors
        template = result.template["metadata"]["name"] if result.template else ""
        logger().info(
            "converted" + (" (dry run)" if review.dry_run else ""),
            extra={**extra, "template": template, "vendors": ",".join(result.vendors)},
        )
        return rv.allowed(review.uid, result.patch, result.warnings), MUTATED, result.vendors

    async def _validate(self, review: rv.Review, extra: dict[str, Any]) -> Answer:
        """``/validate``: a ResourceClaim being created is charged to its namespace's quota; anything else
        the configuration sends is allowed (the endpoint changes nothing)."""
        if not review.creates_claim or self.quota is None:
            return rv.allowed(review.uid), ALLOWED, ()
        verdict = await self.quota.check_claim(
            review.namespace, review.obj, dry_run=review.dry_run, review_uid=review.uid, log=extra
        )
        if not verdict.allowed:
            outcome = UNAVAILABLE if verdict.unavailable else DENIED
            return rv.denial(review.uid, verdict.message, verdict.code), outcome, ()
        return rv.allowed(review.uid), ALLOWED, ()
