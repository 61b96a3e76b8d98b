"""What a candidate is worth: answers, extraction, coherence, verifiers and selection."""
