"""DRA kubelet plugin: publishes shareable devices and prepares claims with limits."""
