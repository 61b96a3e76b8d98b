"""The Soft Reasoning search: perturbed first-token embeddings proposed by Bayesian optimisation."""
