"""Tools over finished runs: compare, rescore, diagnose, gate, curves, digests, reports, view."""
