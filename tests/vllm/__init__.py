"""Tests that need vLLM: run them in the vLLM virtualenv (.ci/run)."""
