"""The vector index of decisions (Qdrant): where it lives."""
