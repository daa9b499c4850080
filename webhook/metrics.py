"""Prometheus metrics of the webhook, in a registry of their own (one per server)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Outcomes of one review.
ALLOWED = "allowed"
"""Admitted unchanged (nothing to convert)."""
MUTATED = "mutated"
"""Admitted with a patch."""
DENIED = "denied"
"""Refused: the pod cannot be converted as it is."""
UNAVAILABLE = "unavailable"
"""Refused: the claim template could not be ensured (API server unreachable or refusing)."""
INVALID = "invalid"
"""The request was not a usable AdmissionReview."""
ERROR = "error"
"""An internal error (a bug); refused."""

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reviews = Counter(
            "tessera_webhook_reviews",
            "Admission reviews answered, by outcome and by vendor named in the pod (none: no accelerator).",
            ["outcome", "vendor"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "tessera_webhook_review_duration_seconds",
            "Time to answer one admission review, including template creation.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.templates = Counter(
            "tessera_webhook_template_creations",
            "ResourceClaimTemplate ensures: created, exists (already there with our content), cached, failed.",
            ["result"],
            registry=self.registry,
        )
        self.tls_reloads = Counter(
            "tessera_webhook_tls_reloads",
            "Certificate reloads after the files changed, by result.",
            ["result"],
            registry=self.registry,
        )
        self.inventory_devices = Gauge(
            "tessera_webhook_inventory_devices",
            "Devices in the inventory read from ResourceSlices (memory percentages, size checks).",
            registry=self.registry,
        )

        self.quota_checks = Counter(
            "tessera_webhook_quota_checks",
            "Quota checks of pods (at conversion) and resource claims (at creation) in namespaces with a quota "
            "on Tessera's resources, by result: admitted, denied, unavailable (the ledger could not be used).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.quota_conflicts = Counter(
            "tessera_webhook_quota_conflicts",
            "Quota ledger writes that lost a compare-and-swap to another writer and were computed again.",
            registry=self.registry,
        )

    def review(self, outcome: str, vendors: Sequence[str], seconds: float) -> None:
        for vendor in vendors or ("none",):
            self.reviews.labels(outcome, vendor).inc()
        self.duration.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
