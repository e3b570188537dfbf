# Fixtures live in plugins, one per service the tests start themselves.
import pytest

pytest_plugins = ["tests.plugins.gateway", "tests.plugins.aws", "tests.plugins.pipeline"]


def pytest_configure(config: pytest.Config) -> None:
    # Under xdist (-n), schedule by xdist_group: a class-scoped stack (tests/test_malformed_inputs.py) is then
    # set up on one worker instead of on each worker that gets one of its tests. Ungrouped tests are spread
    # one by one, as with --dist load.
    option = config.option
    if getattr(option, "numprocesses", None) and getattr(option, "dist", "no") in ("no", "load"):
        option.dist = "loadgroup"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The long tests first, so that no worker starts one when the others are done.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
