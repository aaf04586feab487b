"""Results files, statistics, claims and compare."""
