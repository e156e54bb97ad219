"""The master: HTTP API, services and the reconcile loop."""
