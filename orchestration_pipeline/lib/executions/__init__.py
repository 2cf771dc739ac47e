"""Decision executions: policies, at-most-once claims, effects performed outside any transaction."""
