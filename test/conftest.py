import logging
import sys
from pathlib import Path

import pytest

# The source folders first. In a sourced ROS 2 workspace that does not hide the installed
# spatialgeo_ros (its generated interfaces): spatialgeo_ros/__init__.py extends the package's path.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test" / "core"))
sys.path.insert(0, str(ROOT / "test" / "ros"))      # live_ros.py, the real-ROS tests' helpers

# bitsandbytes logs a warning about an optional CPU kernel package on import; not ours to fix.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random SpatialGeo checkpoint in our format (built once per session)."""
    from spatialgeo_core.tiny import build_tiny_checkpoint
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny")


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_dir):
    from spatialgeo_core.pipeline import SpatialGeoPipeline
    return SpatialGeoPipeline.from_pretrained(tiny_dir)


@pytest.fixture
def caplog(caplog):
    """pytest's caplog, also for loggers that do not propagate to the root logger, whose handler
    caplog reads. In a sourced ROS 2 environment launch_testing's pytest plugin imports
    launch.logging, which sets a logger class whose loggers have propagate=False: every logger
    created after that (our modules' included) would log past caplog. For the test, existing
    loggers propagate and new ones are plain loggers; both are put back afterwards."""
    logger_class = logging.getLoggerClass()
    silent = [logger for logger in logging.Logger.manager.loggerDict.values()
              if isinstance(logger, logging.Logger) and not logger.propagate]
    for logger in silent:
        logger.propagate = True
    logging.setLoggerClass(logging.Logger)
    try:
        yield caplog
    finally:
        logging.setLoggerClass(logger_class)
        for logger in silent:
            logger.propagate = False
