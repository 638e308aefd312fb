"""caplog sees our loggers also where they do not propagate: launch_testing's pytest plugin (in a
sourced ROS 2 environment) imports launch.logging, whose logger class sets propagate=False. The
fixture below does what that import does, before caplog is set up."""
import logging

import pytest


class NonPropagatingLogger(logging.Logger):
    """What launch.logging.LaunchLogger does to every logger created after its import."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.propagate = False


@pytest.fixture
def launch_logging():
    previous = logging.getLoggerClass()
    logging.setLoggerClass(NonPropagatingLogger)
    created = logging.getLogger("spatialgeo_test.created_before_the_test")
    try:
        yield created
    finally:
        logging.setLoggerClass(previous)


def test_caplog_sees_loggers_that_do_not_propagate(launch_logging, caplog):
    # arguments in this order: launch_logging is set up first, as the plugin is loaded first
    assert isinstance(launch_logging, NonPropagatingLogger)
    with caplog.at_level(logging.WARNING):
        launch_logging.warning("from a logger made before the test")
        logging.getLogger("spatialgeo_test.created_in_the_test").warning("from a new logger")
    assert "from a logger made before the test" in caplog.text
    assert "from a new logger" in caplog.text
