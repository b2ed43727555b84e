"""Operators with a pure-PyTorch reference and fast paths."""
