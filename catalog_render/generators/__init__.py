"""Image generators. ``registry.load_generator(uri)`` picks the family from a model directory."""
