"""Decoding strategies: what to decode for a question next, and the runner that batches them."""
