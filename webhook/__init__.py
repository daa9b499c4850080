"""Mutating admission webhook: HAMi-style pods become DRA ResourceClaimTemplates."""
