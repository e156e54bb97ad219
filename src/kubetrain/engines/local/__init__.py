"""The embedded single-machine engine: a node agent forks one supervisor per attempt."""
