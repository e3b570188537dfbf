"""Handlers of tests/data/fake_template.yaml, for the embedded AWS's own tests."""
