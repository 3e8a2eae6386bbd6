"""The command line: the only place that prints for users or exits."""
