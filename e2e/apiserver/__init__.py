"""An in-memory kube-apiserver stand-in for tests and the local cluster harness (never used by the product).

from e2e.apiserver import APIServer
async with APIServer.running(host="127.0.0.1", port=0) as api:
    api.write_kubeconfig(path)
"""

from .errors import APIError
from .faults import Fault, Faults
from .server import APIServer, RequestRecord, WriteContext
from .store import Store

__all__ = ["APIError", "APIServer", "Fault", "Faults", "RequestRecord", "Store", "WriteContext"]
