"""zoo.runtime."""
