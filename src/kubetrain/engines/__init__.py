"""Engines run attempts.  Each sits behind :class:`kubetrain.engines.base.Engine`."""
