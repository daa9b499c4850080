"""End-to-end tests: run against the local harness, or a real cluster via TESSERA_E2E_KUBECONFIG."""
