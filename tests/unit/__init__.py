"""Unit tests: one module or piece of the package at a time (no lm-eval run)."""
