"""The lm-eval side: the ``--model`` classes and the guards and hooks around a run."""
