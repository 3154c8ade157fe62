"""Training generators on a catalog's own photos."""
