# Fixtures live in plugins, one per service the tests start themselves.
pytest_plugins = ["tests.plugins.gateway", "tests.plugins.aws", "tests.plugins.pipeline"]
