"""The local cluster harness: ``Harness`` wires the API server, webhook, drivers, controllers and
kubelets together; ``python -m e2e.cluster`` runs the narrated demo or serves a cluster."""

from .harness import DRIVER, Harness, HarnessError, Node, NodeSpec, render_chart, wait_for

__all__ = ["DRIVER", "Harness", "HarnessError", "Node", "NodeSpec", "render_chart", "wait_for"]
