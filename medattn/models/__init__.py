"""Networks and the registry that builds them by name (see shared/MODELS.md)."""
