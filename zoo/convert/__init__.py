"""zoo.convert."""
