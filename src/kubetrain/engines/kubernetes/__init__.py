"""The Kubernetes engine: one batch/v1 Job per attempt; the cluster runs them, this master records them."""
