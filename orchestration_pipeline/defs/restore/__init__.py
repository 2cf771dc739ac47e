"""Durability: the restore drill (backup, restore into a scratch database, verify, RTO) and its checks."""
