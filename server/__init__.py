"""Backchannel: a live comment server with a gap-free event log per thread."""
