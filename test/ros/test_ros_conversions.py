"""conversions: every accepted encoding, checked against rosbags-image on messages written to and
read back from a rosbag2 by rosbags; compressed images; requests and results."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PILImage

from spatialgeo_core.errors import InvalidImageError, InvalidRegionError
from spatialgeo_core.types import Region
from spatialgeo_ros.conversions import (
    COLOR_ENCODINGS,
    ENCODINGS,
    array_to_rgb,
    compressed_to_rgb,
    decode_compressed,
    decoded_to_rgb,
    depth_to_meters,
    fill_result,
    image_to_array,
    image_to_rgb,
    region_from_msg,
    request_from_msg,
    set_duration,
    set_stamp,
    stamp_to_ns,
)
from spatialgeo_ros.outcomes import QueryOutcome, Status


@pytest.fixture(scope="module")
def rb(msgs):
    """rosbags: its Jazzy typestore, bag reader and writer, and message helpers."""
    pytest.importorskip("rosbags", reason="rosbags is in the [eval] extra: pip install -e .[test]")
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    return SimpleNamespace(
        ts=ts, Reader=Reader, Writer=Writer,
        default=lambda typename, **fields: msgs.default(ts, typename, **fields),
        image=lambda array, encoding, step=None, be=False, stamp_ns=0: msgs.image(
            ts, array, encoding, step, be, stamp_ns))


RNG = np.random.default_rng(0)


def rand(shape, dtype):
    if np.dtype(dtype).kind == "f":
        return RNG.uniform(0.1, 20.0, shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


# name: (array in the encoding's layout, encoding, step or None, big-endian)
H, W = 6, 5
CASES = {
    "rgb8": (rand((H, W, 3), np.uint8), "rgb8", None, False),
    "bgr8": (rand((H, W, 3), np.uint8), "bgr8", None, False),
    "rgba8": (rand((H, W, 4), np.uint8), "rgba8", None, False),
    "bgra8": (rand((H, W, 4), np.uint8), "bgra8", None, False),
    "mono8": (rand((H, W), np.uint8), "mono8", None, False),
    "mono16": (rand((H, W), np.uint16), "mono16", None, False),
    "mono16_be": (rand((H, W), np.uint16), "mono16", None, True),
    "rgb16": (rand((H, W, 3), np.uint16), "rgb16", None, False),
    "bgr16_be": (rand((H, W, 3), np.uint16), "bgr16", None, True),
    "rgba16": (rand((H, W, 4), np.uint16), "rgba16", None, False),
    "bgra16": (rand((H, W, 4), np.uint16), "bgra16", None, False),
    "uyvy": (rand((H, 6, 2), np.uint8), "uyvy", None, False),
    "yuv422": (rand((H, 6, 2), np.uint8), "yuv422", None, False),
    "yuyv": (rand((H, 6, 2), np.uint8), "yuyv", None, False),
    "yuv422_yuy2": (rand((H, 6, 2), np.uint8), "yuv422_yuy2", None, False),
    "8UC1": (rand((H, W), np.uint8), "8UC1", None, False),
    "16UC1": (rand((H, W), np.uint16), "16UC1", None, False),
    "16UC1_be": (rand((H, W), np.uint16), "16UC1", None, True),
    "32FC1": (rand((H, W), np.float32), "32FC1", None, False),
    "32FC1_be": (rand((H, W), np.float32), "32FC1", None, True),
    # padded rows; 16 and 22 are not multiples of the pixel size (3 and 2*... bytes)
    "rgb8_padded": (rand((H, W, 3), np.uint8), "rgb8", 16, False),
    "bgra8_padded": (rand((H, W, 4), np.uint8), "bgra8", 32, False),
    "mono16_padded": (rand((H, W), np.uint16), "mono16", 13, False),
    "16UC1_be_padded": (rand((H, W), np.uint16), "16UC1", 16, True),
    "32FC1_padded": (rand((H, W), np.float32), "32FC1", 22, False),
}


@pytest.fixture(scope="module")
def bag_messages(tmp_path_factory, rb):
    """Write every case (and a PNG and a JPEG CompressedImage) to a rosbag2 with rosbags, read it
    back and deserialize: the conversions see what a bag replay delivers."""
    path = tmp_path_factory.mktemp("bag") / "images"
    rgb = rand((24, 32, 3), np.uint8)
    compressed = {}
    for fmt in ("png", "jpeg"):
        buf = io.BytesIO()
        PILImage.fromarray(rgb).save(buf, format=fmt.upper(), quality=95)
        compressed[fmt] = rb.default(
            "sensor_msgs/msg/CompressedImage", format=fmt,
            data=np.frombuffer(buf.getvalue(), np.uint8))
    with rb.Writer(path, version=9) as writer:
        for i, (name, (array, encoding, step, be)) in enumerate(CASES.items()):
            msg = rb.image(array, encoding, step, be, stamp_ns=(i + 1) * 1000)
            conn = writer.add_connection(f"/img/{name}", "sensor_msgs/msg/Image",
                                         typestore=rb.ts)
            writer.write(conn, (i + 1) * 1000,
                         rb.ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
        for fmt, msg in compressed.items():
            conn = writer.add_connection(f"/compressed/{fmt}", "sensor_msgs/msg/CompressedImage",
                                         typestore=rb.ts)
            writer.write(conn, 10**6, rb.ts.serialize_cdr(
                msg, "sensor_msgs/msg/CompressedImage"))
    out = {}
    with rb.Reader(path) as reader:
        for conn, _, raw in reader.messages():
            out[conn.topic] = rb.ts.deserialize_cdr(raw, conn.msgtype)
    out["rgb"] = rgb
    return out


@pytest.fixture(scope="module")
def rosbags_image():
    return pytest.importorskip(
        "rosbags.image",
        reason="rosbags-image needs OpenCV: pip install 'rosbags-image[opencv-headless]'")


def unpadded(rb, name):
    """The case without row padding: rosbags-image's image_to_cvimage ignores `step`."""
    array, encoding, _, be = CASES[name]
    return rb.image(array, encoding, None, be)


def test_every_accepted_encoding_has_a_case():
    assert {c[1] for c in CASES.values()} == set(ENCODINGS)


@pytest.mark.parametrize("name", CASES)
def test_passthrough_decode_matches_the_source_and_rosbags_image(name, bag_messages,
                                                                 rosbags_image, rb):
    array, encoding, step, be = CASES[name]
    msg = bag_messages[f"/img/{name}"]
    assert msg.step == (step or msg.step) and bool(msg.is_bigendian) == be
    ours = image_to_array(msg)
    assert ours.dtype == array.dtype and ours.dtype.isnative and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, array)
    theirs = rosbags_image.image_to_cvimage(unpadded(rb, name))
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[1] in COLOR_ENCODINGS])
def test_rgb_matches_rosbags_image(name, bag_messages, rosbags_image, rb):
    msg = bag_messages[f"/img/{name}"]
    ours = image_to_rgb(msg)
    assert ours.dtype == np.uint8 and ours.shape == (msg.height, msg.width, 3)
    theirs = rosbags_image.message_to_cvimage(unpadded(rb, name), "rgb8")
    np.testing.assert_array_equal(ours, theirs)


def test_rgb_channel_order_by_hand(image_msg):
    px = np.array([[[10, 20, 30]]], np.uint8)                 # [1, 1, 3]
    assert image_to_rgb(image_msg(px, "rgb8")).tolist() == [[[10, 20, 30]]]
    assert image_to_rgb(image_msg(px, "bgr8")).tolist() == [[[30, 20, 10]]]
    rgba = np.array([[[10, 20, 30, 40]]], np.uint8)
    assert image_to_rgb(image_msg(rgba, "bgra8")).tolist() == [[[30, 20, 10]]]
    mono = np.array([[65535, 257]], np.uint16)
    assert image_to_rgb(image_msg(mono, "mono16", bigendian=True)).tolist() == [
        [[255, 255, 255], [1, 1, 1]]]


def test_data_types_rclpy_uses_are_accepted(image_msg):
    import array as pyarray

    px = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    msg = image_msg(px, "rgb8")
    for data in (pyarray.array("B", msg.data), list(msg.data), bytearray(msg.data)):
        msg.data = data
        np.testing.assert_array_equal(image_to_rgb(msg), px)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_matches_rosbags_image(fmt, bag_messages, rosbags_image):
    msg = bag_messages[f"/compressed/{fmt}"]
    ours = compressed_to_rgb(msg)
    theirs = rosbags_image.message_to_cvimage(msg, "rgb8")
    assert ours.shape == theirs.shape == (24, 32, 3) and ours.dtype == np.uint8
    if fmt == "png":
        np.testing.assert_array_equal(ours, bag_messages["rgb"])
        np.testing.assert_array_equal(ours, theirs)
    else:   # two JPEG decoders may round differently
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 3


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_node_compressed_decode_matches_rosbags_image(fmt, bag_messages, rosbags_image):
    """The node's decode_compressed (OpenCV where cv_bridge is absent) gives rosbags-image's
    pixels, which are OpenCV's too."""
    msg = bag_messages[f"/compressed/{fmt}"]
    np.testing.assert_array_equal(decode_compressed(msg), rosbags_image.message_to_cvimage(
        msg, "rgb8"))
    if fmt == "png":
        np.testing.assert_array_equal(decode_compressed(msg), bag_messages["rgb"])


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_cv_bridge_and_opencv_decode_the_same_pixels(fmt, bag_messages, monkeypatch):
    pytest.importorskip("cv_bridge", reason="cv_bridge is not on PyPI: needs a ROS 2 install")
    from spatialgeo_ros import conversions

    msg = bag_messages[f"/compressed/{fmt}"]
    assert conversions.check_compressed_decoding() == "cv_bridge"
    with_bridge = decode_compressed(msg)
    monkeypatch.setattr(conversions, "available", lambda name: False)   # as without cv_bridge
    assert conversions.check_compressed_decoding() == "opencv"
    np.testing.assert_array_equal(with_bridge, decode_compressed(msg))


@pytest.mark.parametrize("data, fmt, match", [
    (b"", "jpeg", "has no data"),
    (bytes(range(256)) * 4, "jpeg", "not an image that OpenCV can decode"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "png", "OpenCV|not an image"),
    (b"x", "16UC1; compressedDepth png", "compressed depth"),
])
def test_bad_compressed_images_are_one_line_invalid_image_errors(data, fmt, match):
    with pytest.raises(InvalidImageError, match=match) as err:
        decode_compressed(SimpleNamespace(format=fmt, data=data))
    assert "\n" not in str(err.value) and fmt in str(err.value)


def test_compressed_grey_and_16_bit_png():
    from types import SimpleNamespace

    grey = rand((4, 6), np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(grey).save(buf, format="PNG")
    out = compressed_to_rgb(SimpleNamespace(format="png", data=buf.getvalue()))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=-1))
    deep = np.array([[0, 65535, 1000]], np.uint16)
    buf = io.BytesIO()
    PILImage.fromarray(deep).save(buf, format="PNG")
    out = compressed_to_rgb(SimpleNamespace(format="png", data=buf.getvalue()))
    assert out[0, :, 0].tolist() == [0, 255, 3]


def test_depth_to_meters(image_msg):
    mm = np.array([[0, 1500, 65535]], np.uint16)
    out = depth_to_meters(image_msg(mm, "16UC1", bigendian=True))
    assert np.isnan(out[0, 0]) and out[0, 1] == pytest.approx(1.5)
    assert out[0, 2] == pytest.approx(65.535)
    m = np.array([[np.nan, 0.0, 2.25, np.inf]], np.float32)
    out = depth_to_meters(image_msg(m, "32FC1"))
    assert np.isnan(out[0, [0, 1, 3]]).all() and out[0, 2] == 2.25
    with pytest.raises(InvalidImageError, match="16UC1 or 32FC1"):
        depth_to_meters(image_msg(np.zeros((1, 1), np.uint8), "mono8"))


@pytest.mark.parametrize("change, match", [
    ({"encoding": "bayer_rggb8"}, "unsupported image encoding 'bayer_rggb8'"),
    ({"width": 0}, "empty image"),
    ({"step": 10}, "step 10 is shorter than a row"),
    ({"data": b"\x00" * 20}, "needs 45 bytes, data has 20"),
])
def test_bad_images_are_invalid_image_errors(image_msg, change, match):
    msg = image_msg(np.zeros((3, 5, 3), np.uint8), "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(InvalidImageError, match=match):
        image_to_rgb(msg)


def test_last_row_without_padding_is_accepted(image_msg):
    px = rand((3, 5, 3), np.uint8)
    msg = image_msg(px, "rgb8", step=16)
    msg.data = msg.data[:-1]                     # 16 + 16 + 15 bytes
    np.testing.assert_array_equal(image_to_rgb(msg), px)


def test_non_colour_encodings_are_not_questions(image_msg):
    for encoding in ("16UC1", "32FC1", "8UC1"):
        with pytest.raises(InvalidImageError, match="not a colour image"):
            image_to_rgb(image_msg(np.zeros((2, 2), ENCODINGS[encoding].dtype), encoding))
    with pytest.raises(InvalidImageError, match="even width"):
        array_to_rgb(np.zeros((2, 3, 2), np.uint8), "uyvy")
    with pytest.raises(InvalidImageError):
        decoded_to_rgb(None)


def test_compressed_depth_and_garbage_are_rejected():
    from types import SimpleNamespace

    with pytest.raises(InvalidImageError, match="compressed depth"):
        compressed_to_rgb(SimpleNamespace(format="16UC1; compressedDepth png", data=b"x"))
    with pytest.raises(InvalidImageError, match="cannot decode"):
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=b"not a jpeg"))


# ---- requests and results, on rosbags classes generated from our own interface files --------

def test_stamps_and_durations():
    from types import SimpleNamespace

    t = SimpleNamespace(sec=0, nanosec=0)
    set_stamp(t, 12_345_678_901)
    assert (t.sec, t.nanosec) == (12, 345_678_901) and stamp_to_ns(t) == 12_345_678_901
    set_stamp(t, -5)
    assert (t.sec, t.nanosec) == (0, 0)
    set_duration(t, 1.25)
    assert (t.sec, t.nanosec) == (1, 250_000_000)


@pytest.fixture
def iface(interfaces, msgs):
    """Our interface files as rosbags classes: iface.new("Region", **fields) (a short name of
    ours or a full type name), iface.image(array, encoding)."""
    ts, names = interfaces
    return SimpleNamespace(
        ts=ts, names=names,
        new=lambda typename, **fields: msgs.default(ts, names.get(typename, typename), **fields),
        image=lambda array, encoding: msgs.image(ts, array, encoding))


def test_request_from_msg(iface):
    mask = iface.image(np.eye(4, dtype=np.uint8) * 255, "mono8")
    request = iface.new(
        "SpatialQuery_Request", question="How far is Region [0] from Region [1]?",
        camera="front", stamp=iface.new("builtin_interfaces/msg/Time", sec=7, nanosec=5),
        regions=[iface.new("Region", has_box=True, x_min=1.0, y_min=2.0, x_max=3.0, y_max=4.0),
                 iface.new("Region", mask=mask)],
        limits=iface.new("GenerationLimits", max_new_tokens=64, temperature=0.5,
                         timeout_s=2.0))
    q = request_from_msg(request)
    assert q.question.startswith("How far") and q.camera == "front"
    assert q.stamp_ns == 7_000_000_005
    assert (q.max_new_tokens, q.temperature, q.timeout_s) == (64, 0.5, 2.0)
    assert q.regions[0] == Region(box=(1.0, 2.0, 3.0, 4.0))
    assert q.regions[1].box is None
    np.testing.assert_array_equal(q.regions[1].mask, np.eye(4, dtype=bool))
    goal = iface.new("SpatialQueryStream_Goal", question="q")
    assert request_from_msg(goal).regions == () and request_from_msg(goal).stamp_ns == 0


def test_bad_regions(iface):
    with pytest.raises(InvalidRegionError, match=r"Region \[2\] has neither a box"):
        region_from_msg(iface.new("Region"), index=2)
    with pytest.raises(InvalidRegionError, match="mask encoding must be mono8 or 8UC1"):
        region_from_msg(iface.new("Region", mask=iface.image(np.zeros((2, 2, 3), np.uint8),
                                                             "rgb8")))
    with pytest.raises(InvalidRegionError, match="not finite"):
        region_from_msg(iface.new("Region", has_box=True, x_max=float("nan")))
    broken = iface.image(np.zeros((4, 4), np.uint8), "mono8")
    broken.data = broken.data[:3]
    with pytest.raises(InvalidRegionError, match="bad mask"):
        region_from_msg(iface.new("Region", mask=broken))


@pytest.mark.parametrize("target", ["SpatialQuery_Response", "SpatialQueryStream_Result",
                                    "SpatialAnswer"])
def test_fill_result(iface, target):
    msg = iface.new(target)
    fill_result(msg, QueryOutcome(Status.OK, "answered", answer="About 2 m.", value=2.0,
                                  unit="m", stamp_ns=3_000_000_007, frame_id="cam_optical",
                                  latency_s=0.5))
    assert msg.status.code == msg.status.OK == Status.OK and msg.status.message == "answered"
    assert (msg.answer, msg.has_value, msg.value, msg.unit) == ("About 2 m.", True, 2.0, "m")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 7)
    assert msg.header.frame_id == "cam_optical"
    assert (msg.latency.sec, msg.latency.nanosec) == (0, 500_000_000)
    fill_result(msg, QueryOutcome(Status.BUSY, "full"))
    assert msg.status.code == msg.status.BUSY and not msg.has_value and msg.value == 0.0
    # what the node returns must serialize as the interface says
    iface.ts.serialize_cdr(msg, iface.names[target])
