"""The ``kubetrain`` command line: a thin client of the API."""
