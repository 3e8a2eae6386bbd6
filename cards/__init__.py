"""The built-in catalog: one YAML card per published model name (read by `zoo search`/`zoo show`)."""
