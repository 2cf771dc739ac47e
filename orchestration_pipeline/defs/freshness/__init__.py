"""Freshness: checks that what is derived from the events keeps up, and the schedule that runs them."""
