"""The credit engine: grants burnt down by metered usage, period by period (pure functions)."""
