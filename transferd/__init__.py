"""transferd: sequencer-to-Gencove delivery daemon."""

__version__ = "0.1.0"
