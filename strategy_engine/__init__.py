"""strategy_engine."""
