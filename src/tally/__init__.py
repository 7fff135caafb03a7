"""Tally: realtime, auditable voting at TV-final scale on Valkey."""

__version__ = "0.1.0"
