"""The lm-eval model and its plumbing: generate_until, the window, cache, outputs, faults."""
