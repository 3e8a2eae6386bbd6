"""zoo.registry."""
