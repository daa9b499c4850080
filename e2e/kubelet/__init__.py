"""A kubelet stand-in: DRA plugin registration and prepare/unprepare over gRPC, containers as local
processes with the CDI edits applied."""

from .cdi import CDIError, Edits, ProcessSpec, load_specs, resolve, to_process
from .kubelet import Kubelet, PodWorker
from .plugins import ClaimRef, Plugin, PluginError, PluginWatcher, PreparedDevice

__all__ = [
    "CDIError",
    "ClaimRef",
    "Edits",
    "Kubelet",
    "Plugin",
    "PluginError",
    "PluginWatcher",
    "PodWorker",
    "PreparedDevice",
    "ProcessSpec",
    "load_specs",
    "resolve",
    "to_process",
]
