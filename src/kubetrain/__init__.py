"""kubetrain: one master for every training job.

The top-level package stays import-light on purpose: training code does
``import kubetrain`` and must not pay for the server, the store or the CLI.
"""

__version__ = "0.1.0"
