"""Redaction of secrets before anything is stored."""
