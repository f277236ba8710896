"""pattern_engine."""
