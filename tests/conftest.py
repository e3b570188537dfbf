# Fixtures live in plugins, one per service the tests start themselves.
from typing import Any

import pytest

pytest_plugins = ["tests.plugins.gateway", "tests.plugins.aws", "tests.plugins.pipeline"]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under xdist's default distribution (-n alone, or --dist load): the tests of a class go to one worker,
    so that a class-scoped setup (tests/test_malformed_inputs.py deploys a stack and floods it) runs once, not
    on every worker that gets one of its tests; every other test is handed out on its own, as --dist load does.
    The biggest classes are handed out first. (--dist loadgroup would do it with marks, but pytest 9 ignores
    the node ids it rewrites.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ClassAtOnce(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            parts = nodeid.split("::")
            return "::".join(parts[:2]) if len(parts) > 2 else nodeid

    return ClassAtOnce(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The long tests first, so that no worker starts one when the others are done.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
