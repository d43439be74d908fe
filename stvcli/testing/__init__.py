"""Test beds that need no hub and no GPU (tiny random models of every family)."""
