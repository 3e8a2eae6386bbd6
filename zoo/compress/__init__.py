"""zoo.compress."""
