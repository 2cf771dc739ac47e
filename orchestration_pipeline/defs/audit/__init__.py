"""Audit ledger integrity and decision executions."""
