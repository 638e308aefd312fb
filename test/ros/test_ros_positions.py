"""Region positions in the node without ROS: the depth buffer beside the colour frames, matching
by stamp, the latest CameraInfo, every bad depth input answered with a status, the positions and
the annotated image in a QueryService outcome, and their conversions to our interfaces and to
visualization_msgs/MarkerArray (rosbags classes, serialized as DDS would)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from spatialgeo_core.depth import depth_from_array
from spatialgeo_core.frames import Frame
from spatialgeo_core.image_msgs import depth_to_meters, image_to_rgb
from spatialgeo_core.intrinsics import CameraIntrinsics
from spatialgeo_core.intrinsics import from_camera_info as intrinsics_from_camera_info
from spatialgeo_core.region_positions import RegionPosition, region_positions
from spatialgeo_core.regions import PALETTE, draw_regions
from spatialgeo_core.synthetic.depth_truth import depth_array
from spatialgeo_core.synthetic.world import make_sample
from spatialgeo_core.types import Region
from spatialgeo_ros.geometry_conversions import (
    ADD,
    CUBE,
    DELETEALL,
    MIN_SCALE_M,
    TEXT_VIEW_FACING,
    fill_markers,
    fill_positions,
    fill_rgb_image,
)
from spatialgeo_ros.outcomes import QueryOutcome, Status
from spatialgeo_ros.params import params_from_values
from spatialgeo_ros.position_source import (
    NOT_COMPUTED,
    PositionCode,
    PositionSource,
    PositionsOutcome,
)
from spatialgeo_ros.query_service import QueryService
from spatialgeo_ros.request_validation import QueryRequest

S = 1_000_000_000
STAMP = 100 * S
FRAME_ID = "camera_optical_frame"


@pytest.fixture(scope="module")
def scene():
    """A synthetic frame: its rgb, camera, two object regions (a mask and a box) and the
    positions the core gives them from its 16UC1 depth."""
    sample = make_sample(0, "test", 2)
    r = sample.rendering
    cam = r.camera
    a, b = sample.regions[:2]
    regions = (Region(mask=r.mask(a)), Region(box=tuple(r.objects[b].box2d)))
    intr = CameraIntrinsics(cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)
    expected = region_positions(depth_from_array(depth_array(r, "16UC1")), regions, intr)
    return SimpleNamespace(sample=sample, rgb=sample.rgb, cam=cam, regions=regions,
                           expected=expected)


def camera_info(cam, **fields):
    roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False)
    values = dict(width=cam.width, height=cam.height, distortion_model="plumb_bob",
                  d=[0.0] * 5, k=list(cam.K.reshape(-1)),
                  p=list(np.hstack([cam.K, np.zeros((3, 1))]).reshape(-1)),
                  binning_x=0, binning_y=0, roi=roi)
    values.update(fields)
    return SimpleNamespace(**values)


def source(enabled=True, tolerance_s=0.02):
    return PositionSource(("camera",), enabled, buffer_size=5,
                          tolerance_ns=round(tolerance_s * S), decode_depth=depth_to_meters,
                          decode_info=intrinsics_from_camera_info,
                          depth_topic=lambda camera: "/cam/depth")


def colour_frame(stamp=STAMP, frame_id=FRAME_ID):
    return Frame(stamp, None, frame_id)


def size(scene):
    return (scene.cam.width, scene.cam.height)


# ---- PositionSource: every status --------------------------------------------------------------
@pytest.mark.parametrize("encoding, step, bigendian", [("16UC1", None, False),
                                                       ("16UC1", 2 * 128 + 6, True),
                                                       ("32FC1", None, False),
                                                       ("32FC1", 4 * 128 + 4, True)])
def test_positions_from_depth_messages_equal_the_core(scene, image_msg, encoding, step,
                                                      bigendian):
    """Whatever the message's layout (row padding, byte order), the node's positions are the
    core's on the same depth."""
    src = source()
    depth = depth_array(scene.sample.rendering, encoding)
    src.add_depth("camera", STAMP + 5_000_000, image_msg(depth, encoding, step=step,
                                                         bigendian=bigendian,
                                                         frame_id=FRAME_ID), FRAME_ID)
    src.set_camera_info("camera", camera_info(scene.cam))
    out = src.compute("camera", colour_frame(), scene.regions, size(scene))
    assert out.code == PositionCode.OK and "2 region position(s)" in out.message
    intr = CameraIntrinsics(scene.cam.fx, scene.cam.fy, scene.cam.cx, scene.cam.cy)
    expected = region_positions(depth_from_array(depth), scene.regions, intr)
    assert_same_positions(out.positions, expected)
    assert all(p.valid for p in out.positions)


def assert_same_positions(got, expected) -> None:
    """Equal up to float32 rounding of the depth (x / 1000 and x * 0.001 differ in the last
    bit)."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a.valid, a.valid_pixels, a.region_pixels) == (b.valid, b.valid_pixels,
                                                              b.region_pixels)
        np.testing.assert_allclose(a.center_m, b.center_m, atol=1e-5)
        np.testing.assert_allclose(a.size_m, b.size_m, atol=1e-5)


def test_without_depth_the_fields_say_so(scene):
    out = source(enabled=False).compute("camera", colour_frame(), scene.regions, size(scene))
    assert out.code == PositionCode.NO_DEPTH and "cameras.depth" in out.message
    assert len(out.positions) == 2 and not any(p.valid for p in out.positions)
    with pytest.raises(ValueError, match="decode_depth"):
        PositionSource(("camera",), True)


def test_depth_is_matched_by_stamp_within_the_tolerance(scene, image_msg):
    src = source(tolerance_s=0.02)
    src.set_camera_info("camera", camera_info(scene.cam))
    out = src.compute("camera", colour_frame(), scene.regions, size(scene))
    assert out.code == PositionCode.NO_DEPTH_FRAME and "/cam/depth" in out.message
    depth = depth_array(scene.sample.rendering, "32FC1")
    src.add_depth("camera", STAMP + 30_000_000, image_msg(depth, "32FC1"), FRAME_ID)  # 30 ms
    out = src.compute("camera", colour_frame(), scene.regions, size(scene))
    assert out.code == PositionCode.NO_DEPTH_FRAME and "frames.depth_tolerance" in out.message
    far = depth * 2
    src.add_depth("camera", STAMP - 15_000_000, image_msg(far, "32FC1"), FRAME_ID)
    src.add_depth("camera", STAMP + 10_000_000, image_msg(depth, "32FC1"), FRAME_ID)  # nearest
    out = src.compute("camera", colour_frame(), scene.regions, size(scene))
    assert out.code == PositionCode.OK
    np.testing.assert_allclose(out.positions[0].center_m, scene.expected[0].center_m,
                               atol=1e-3)


def test_missing_camera_info(scene, image_msg):
    src = source()
    src.add_depth("camera", STAMP, image_msg(depth_array(scene.sample.rendering, "16UC1"),
                                             "16UC1"), FRAME_ID)
    out = src.compute("camera", colour_frame(), scene.regions, size(scene))
    assert out.code == PositionCode.NO_CAMERA_INFO and "'camera'" in out.message
    src.set_camera_info("camera", camera_info(scene.cam))
    assert src.compute("camera", colour_frame(), scene.regions, size(scene)).code == \
        PositionCode.OK
    src.clear()                                        # cleanup drops depth and CameraInfo
    assert src.camera_info("camera") is None and len(src.buffers["camera"]) == 0


@pytest.mark.parametrize("what, make, match", [
    ("wrong encoding", lambda d, m: m(np.zeros(d.shape + (3,), np.uint8), "rgb8"),
     "16UC1 or 32FC1, got 'rgb8'"),
    ("mono16", lambda d, m: m(d, "mono16"), "got 'mono16'"),
    ("wrong size", lambda d, m: m(d[::2, ::2], "16UC1"), "must be registered to the colour"),
    ("malformed", lambda d, m: SimpleNamespace(**{**vars(m(d, "16UC1")), "data": b"\0" * 10}),
     "needs"),
    ("another frame", lambda d, m: m(d, "16UC1", frame_id="camera_depth_optical_frame"),
     "frame_id 'camera_depth_optical_frame' is not the colour image's"),
])
def test_bad_depth_images_are_invalid_depth(scene, image_msg, what, make, match):
    src = source()
    src.set_camera_info("camera", camera_info(scene.cam))
    msg = make(depth_array(scene.sample.rendering, "16UC1"),
               lambda *a, **k: image_msg(*a, **{"frame_id": FRAME_ID, **k}))
    src.add_depth("camera", STAMP, msg, msg.header.frame_id)
    out = src.compute("camera", colour_frame(), scene.regions, size(scene))
    assert out.code == PositionCode.INVALID_DEPTH, what
    assert match in out.message, out.message
    assert len(out.positions) == 2 and not any(p.valid for p in out.positions)


@pytest.mark.parametrize("fields, match", [
    (dict(k=[0.0] * 9), "K is zero"),
    (dict(width=64, height=64), "64x64 image, the colour frame is 128x128"),
    (dict(distortion_model="equidistant", d=[0.1, 0.0, 0.0, 0.0]), "not supported"),
    (dict(binning_x=2, binning_y=2), "binning"),
])
def test_bad_camera_info_is_invalid_camera_info(scene, image_msg, fields, match):
    src = source()
    src.add_depth("camera", STAMP, image_msg(depth_array(scene.sample.rendering, "16UC1"),
                                             "16UC1"), FRAME_ID)
    src.set_camera_info("camera", camera_info(scene.cam, **fields))
    out = src.compute("camera", colour_frame(), scene.regions, size(scene))
    assert out.code == PositionCode.INVALID_CAMERA_INFO and match in out.message, out.message


def test_all_invalid_pixels_in_a_region_are_no_valid_depth(scene, image_msg):
    src = source()
    depth = depth_array(scene.sample.rendering, "16UC1").copy()
    depth[scene.regions[0].mask] = 0                         # no measurement on the object
    src.add_depth("camera", STAMP, image_msg(depth, "16UC1"), FRAME_ID)
    src.set_camera_info("camera", camera_info(scene.cam))
    out = src.compute("camera", colour_frame(), scene.regions, size(scene))
    assert out.code == PositionCode.NO_VALID_DEPTH
    assert out.message.startswith("Region [0]: none of its") and "Region [1]" not in out.message
    assert not out.positions[0].valid and out.positions[1].valid


def test_an_unexpected_failure_is_a_status_not_an_exception(scene, image_msg):
    def broken(payload):
        raise RuntimeError("decoder exploded")

    src = PositionSource(("camera",), True, 5, S, decode_depth=broken,
                         decode_info=intrinsics_from_camera_info)
    src.add_depth("camera", STAMP, "payload", FRAME_ID)
    src.set_camera_info("camera", camera_info(scene.cam))
    out = src.compute("camera", colour_frame(), scene.regions, size(scene))
    assert out.code == PositionCode.INVALID_DEPTH and "RuntimeError: decoder exploded" in \
        out.message


def test_rectified_reads_p(scene):
    info = camera_info(scene.cam, p=[200.0, 0, 60.0, 0, 0, 210.0, 70.0, 0, 0, 0, 1, 0],
                       d=[0.2, 0.0, 0.0, 0.0, 0.0])
    intr = intrinsics_from_camera_info(info, rectified=True)
    assert (intr.fx, intr.fy, intr.cx, intr.cy, intr.distorted) == (200.0, 210.0, 60.0, 70.0,
                                                                      False)
    assert intrinsics_from_camera_info(info).distorted


# ---- QueryService: positions and the annotated image in the outcome ----------------------------
def make_service(pipeline, scene, depth=True, annotate=True, **values):
    p = params_from_values({"cameras.names": ["camera"], **values})
    service = QueryService(pipeline, p.cameras.names, p.frames, p.query, p.cameras.buffer_size,
                           decode=lambda payload: payload, positions=source(depth),
                           annotate=annotate)
    service.add_frame("camera", STAMP, scene.rgb, frame_id=FRAME_ID)
    service.start()
    return service


def _ask(service, scene, **kwargs):
    request = QueryRequest(question="How far is Region [0] from Region [1]?", stamp_ns=STAMP,
                           regions=scene.regions, **kwargs)
    return service.handle(request, STAMP)


def test_an_answer_carries_positions_and_what_the_model_saw(fake_pipeline_cls, scene,
                                                            image_msg):
    service = make_service(fake_pipeline_cls(), scene)
    try:
        service.add_depth("camera", STAMP, image_msg(
            depth_array(scene.sample.rendering, "16UC1"), "16UC1"), FRAME_ID)
        service.set_camera_info("camera", camera_info(scene.cam))
        out = _ask(service, scene)
        assert out.status == Status.OK and out.positions.code == PositionCode.OK
        assert_same_positions(out.positions.positions, scene.expected)
        h = scene.rgb.shape[0]
        assert out.annotated is not None and out.annotated.shape[0] > h
        np.testing.assert_array_equal(out.annotated[:h],
                                      np.asarray(draw_regions(scene.rgb, scene.regions)))
        panel = out.annotated[h:].reshape(-1, 3)
        assert (panel == PALETTE[0]).all(axis=1).any()       # the positions' lines
    finally:
        service.close()
    assert service.positions.camera_info("camera") is None    # cleanup dropped it


def test_the_annotated_image_is_drawn_only_when_wanted(fake_pipeline_cls, scene):
    wanted = [False]
    service = make_service(fake_pipeline_cls(), scene, depth=False,
                           annotate=lambda: wanted[0])
    try:
        assert _ask(service, scene).annotated is None          # nobody subscribed
        wanted[0] = True
        assert _ask(service, scene).annotated is not None
    finally:
        service.close()


def test_without_depth_nothing_else_changes(fake_pipeline_cls, scene):
    with_depth_off = make_service(fake_pipeline_cls(), scene, depth=False, annotate=False)
    try:
        out = _ask(with_depth_off, scene)
        assert out.status == Status.OK and out.message == "answered"
        assert out.answer == fake_pipeline_cls().text and out.annotated is None
        assert out.positions.code == PositionCode.NO_DEPTH
        assert [p.valid for p in out.positions.positions] == [False, False]
    finally:
        with_depth_off.close()


def test_a_query_that_is_not_answered_computes_no_positions(fake_pipeline_cls, scene):
    service = make_service(fake_pipeline_cls(), scene)
    try:
        out = service.handle(QueryRequest(question="Where?", stamp_ns=STAMP + 60 * S), STAMP)
        assert out.status == Status.NO_FRAME and out.positions is NOT_COMPUTED
        assert out.annotated is None
    finally:
        service.close()


# ---- conversions to our interfaces and to MarkerArray ------------------------------------------
POSITIONS = PositionsOutcome(PositionCode.NO_VALID_DEPTH, "Region [1]: none of its 40 pixels",
                             (RegionPosition(True, (0.5, -0.25, 3.0), (0.4, 0.005, 0.2), 90, 100),
                              RegionPosition(False, None, None, 0, 40, "none of its 40 pixels")))
OUTCOME = QueryOutcome(Status.OK, "answered", answer="Region [0] is about 3 meters away. " * 3,
                       stamp_ns=STAMP + 7, frame_id=FRAME_ID, positions=POSITIONS)


@pytest.mark.parametrize("target", ["SpatialQuery_Response", "SpatialQueryStream_Result",
                                    "SpatialAnswer"])
def test_fill_positions(interfaces, msgs, target):
    ts, names = interfaces
    msg = msgs.default(ts, names[target])
    fill_positions(msg, OUTCOME, lambda: msgs.default(ts, names["RegionPosition"]))
    assert msg.positions_status.code == msg.positions_status.NO_VALID_DEPTH
    assert msg.positions_status.message.startswith("Region [1]")
    first, second = msg.positions
    assert first.valid and (first.center.x, first.center.y, first.center.z) == (0.5, -0.25, 3.0)
    assert (first.size.x, first.size.y, first.size.z) == (0.4, 0.005, 0.2)
    assert (first.valid_pixels, first.region_pixels) == (90, 100)
    assert (first.header.stamp.sec, first.header.stamp.nanosec) == (100, 7)
    assert first.header.frame_id == second.header.frame_id == FRAME_ID
    assert not second.valid and second.center.z == 0.0 and second.region_pixels == 40
    raw = ts.serialize_cdr(msg, names[target])                # as DDS carries it
    back = ts.deserialize_cdr(raw, names[target])
    assert back.positions[0].center.z == 3.0 and back.positions_status.code == 7
    fill_positions(msg, QueryOutcome(Status.BUSY, "full"), lambda: None)
    assert msg.positions == [] and msg.positions_status.code == PositionCode.NOT_COMPUTED


def test_marker_constants_are_visualization_msgs(msgs):
    from rosbags.typesys import Stores, get_typestore

    cls = get_typestore(Stores.ROS2_JAZZY).types["visualization_msgs/msg/Marker"]
    assert (cls.CUBE, cls.TEXT_VIEW_FACING, cls.ADD, cls.DELETEALL) == (
        CUBE, TEXT_VIEW_FACING, ADD, DELETEALL)


def test_fill_markers(msgs):
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    array = msgs.default(ts, "visualization_msgs/msg/MarkerArray")
    fill_markers(array, lambda: msgs.default(ts, "visualization_msgs/msg/Marker"), OUTCOME)
    clear, box, label, answer = array.markers                 # region 1 has no position
    assert clear.action == DELETEALL
    for m in array.markers:
        assert (m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id) == (
            100, 7, FRAME_ID)
    assert (box.type, box.action, box.id) == (CUBE, ADD, 0)
    assert (box.pose.position.x, box.pose.position.y, box.pose.position.z) == (0.5, -0.25, 3.0)
    assert box.pose.orientation.w == 1.0
    assert (box.scale.x, box.scale.y, box.scale.z) == (0.4, MIN_SCALE_M, 0.2)  # thin: widened
    assert (round(box.color.r * 255), round(box.color.g * 255), round(box.color.b * 255)) == \
        PALETTE[0] and 0 < box.color.a < 1
    assert (label.type, label.text) == (TEXT_VIEW_FACING, "[0]")
    assert label.pose.position.y < box.pose.position.y - box.scale.y / 2   # above the box
    assert answer.type == TEXT_VIEW_FACING and answer.ns != label.ns
    assert "\n" in answer.text and answer.text.split() == OUTCOME.answer.split()
    assert answer.pose.position.y < label.pose.position.y
    ts.serialize_cdr(array, "visualization_msgs/msg/MarkerArray")
    nothing = QueryOutcome(Status.OK, "answered", answer="No idea.", frame_id=FRAME_ID,
                           positions=PositionsOutcome(PositionCode.NO_DEPTH, "no depth"))
    fill_markers(array, lambda: msgs.default(ts, "visualization_msgs/msg/Marker"), nothing)
    assert [m.action for m in array.markers] == [DELETEALL, ADD]
    assert array.markers[1].text == "No idea." and array.markers[1].pose.position.z == 1.0


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (48, 64)])
def test_rgb_image_round_trips(shape):
    rgb = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    msg = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0),
                                                 frame_id=""))
    fill_rgb_image(msg, rgb, 2 * S + 3, FRAME_ID)
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("rgb8", 3 * shape[1], 0)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
        2, 3, FRAME_ID)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    with pytest.raises(ValueError, match="RGB"):
        fill_rgb_image(msg, rgb[..., 0], 0, "")
