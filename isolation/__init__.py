"""Enforcement inside the container: the env contract, the shared-region reader, and libvgpu (C)."""
