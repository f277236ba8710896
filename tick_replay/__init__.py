"""tick_replay."""
