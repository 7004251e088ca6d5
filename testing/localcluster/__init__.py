"""A local Kubernetes control plane built from Go modules, for tests and the demo."""
