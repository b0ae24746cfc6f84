"""Read-only HTTP views over the tables."""
