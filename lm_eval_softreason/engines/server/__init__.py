"""The client of ``vllm serve`` endpoints."""
