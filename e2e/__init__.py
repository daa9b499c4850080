"""The local cluster harness (stand-ins for kube-apiserver, controllers, scheduler and kubelet) and e2e tests.

The product never imports this package.
"""
