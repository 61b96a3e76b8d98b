"""The vLLM engine: decoding, its CPU workarounds and the checkpoint it reads."""
