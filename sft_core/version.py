"""The version of sft-core."""

__version__ = "0.1.0"
