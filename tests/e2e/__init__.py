"""Whole runs: the lm-eval and lm-eval-softreason command lines, compare, rescore, view."""
