import logging
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test" / "core"))

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
