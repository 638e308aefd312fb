"""QueryService on the real (tiny, random) SpatialGeoPipeline: the node's request path end to end,
without ROS. The answers of a random model mean nothing; the statuses, frames and streaming do."""
from __future__ import annotations

import time

import numpy as np
import pytest

from spatialgeo_core.types import Region
from spatialgeo_ros.outcomes import Status
from spatialgeo_ros.params import params_from_values
from spatialgeo_ros.query_service import QueryService
from spatialgeo_ros.request_validation import QueryRequest

S = 1_000_000_000
NOW = 50 * S


@pytest.fixture
def real_service(tiny_pipeline):
    p = params_from_values({"query.max_pending": 2})
    service = QueryService(tiny_pipeline, p.cameras.names, p.frames, p.query,
                           p.cameras.buffer_size, decode=lambda payload: payload)
    rng = np.random.default_rng(0)
    service.add_frame("camera", NOW, rng.integers(0, 255, (60, 80, 3), np.uint8), "cam")
    service.start()
    yield service
    service.close()


def test_real_pipeline_answers_streams_and_reuses_features(real_service):
    partials = []
    request = QueryRequest(question="How far is Region [0] from Region [1]?",
                           regions=(Region(box=(2, 2, 30, 30)), Region(box=(40, 10, 78, 58))),
                           max_new_tokens=6)
    out = real_service.handle(request, NOW, on_partial=partials.append)
    assert out.status == Status.OK, out.message
    assert out.stamp_ns == NOW and out.frame_id == "cam" and 1 <= out.num_tokens <= 6
    assert all(out.answer.startswith(p) for p in partials)        # on_text is cumulative
    frame = real_service.buffers["camera"].latest()

    def cached(frame):                 # the frame's features in the pipeline's feature cache
        return real_service.pipeline.frame(frame, lambda: pytest.fail("decoded again"))

    features = cached(frame)
    again = real_service.handle(QueryRequest(question="Is Region [0] left of Region [1]?",
                                             regions=request.regions, max_new_tokens=4), NOW)
    assert again.status == Status.OK and cached(frame) is features
    # the frame was encoded once, as the questions show it (marks drawn), never plain
    assert len(features.visual) == 1 and () not in features.visual
    plain = real_service.handle(QueryRequest(question="What is there?", max_new_tokens=3), NOW)
    assert plain.status == Status.OK and () in features.visual and len(features.visual) == 2


def test_real_pipeline_statuses(real_service):
    out = real_service.handle(QueryRequest(question="Is Region [0] big?",
                                           regions=(Region(box=(10, 10, 200, 20)),)), NOW)
    assert out.status == Status.INVALID_REQUEST and "outside the 80x60 image" in out.message
    t0 = time.monotonic()
    out = real_service.handle(QueryRequest(question="Describe the image.", max_new_tokens=512,
                                           timeout_s=0.3), NOW)
    assert out.status in (Status.OK, Status.TIMEOUT)               # a random model may stop
    assert time.monotonic() - t0 < 1.0
