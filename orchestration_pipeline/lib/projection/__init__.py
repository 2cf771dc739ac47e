"""The task projection: the projector that folds task events in, reconciliation against the Tasks DB."""
