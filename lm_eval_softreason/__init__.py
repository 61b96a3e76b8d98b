"""Soft Reasoning (Zhu et al., ICML 2025) as a decoding strategy for lm-evaluation-harness.

Importing this package is deliberately cheap (no torch): the ``.pth`` autoload hook imports it
at every interpreter start. The model lives in :mod:`lm_eval_softreason.harness.hf_model`.
"""

__version__ = "0.1.0"
