"""msg/, srv/ and action/ parse as ROS interface definitions and agree with the code."""
from __future__ import annotations

import keyword
import re
from pathlib import Path

import pytest

from spatialgeo_ros.outcomes import Status
from spatialgeo_ros.position_source import PositionCode

FIELD_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")        # rosidl's rule for field names
CONSTANT_RE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
TYPE_FILE_RE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
SHARED_RESULT_FIELDS = ("status", "answer", "has_value", "value", "unit", "header", "latency",
                        "positions", "positions_status")


def interface_files(repo):
    return sorted(p for folder in ("msg", "srv", "action") for p in (repo / folder).glob("*"))


def test_the_interfaces_exist(repo):
    names = {p.relative_to(repo).as_posix() for p in interface_files(repo)}
    assert names == {"msg/GenerationLimits.msg", "msg/QueryStatus.msg", "msg/Region.msg",
                     "msg/SpatialAnswer.msg", "msg/RegionPosition.msg", "msg/PositionStatus.msg",
                     "srv/SpatialQuery.srv", "action/SpatialQueryStream.action"}


def test_each_file_parses_with_rosbags_and_resolves_its_types(interfaces):
    ts, names = interfaces
    for short, full in names.items():
        msgdef = ts.get_msgdef(full)           # builds the class: every referenced type known
        assert msgdef.fields, short


def test_names_follow_the_rosidl_rules(repo, interfaces):
    ts, names = interfaces
    for path in interface_files(repo):
        assert TYPE_FILE_RE.match(path.stem), path
    for short, full in names.items():
        for field, _ in ts.get_msgdef(full).fields:
            assert FIELD_RE.match(field) and "__" not in field, f"{short}.{field}"
            assert not keyword.iskeyword(field), f"{short}.{field}"
    for line in (repo / "msg" / "QueryStatus.msg").read_text().splitlines():
        decl = line.split("#")[0].strip()
        if "=" in decl:
            assert CONSTANT_RE.match(decl.split()[1].split("=")[0]), line


def test_status_constants_match_the_python_enum(interfaces):
    ts, names = interfaces
    cls = ts.get_msgdef(names["QueryStatus"]).cls
    constants = {k: v for k, v in vars(cls).items() if CONSTANT_RE.match(k)}
    assert constants == {s.name: s.value for s in Status}


def test_position_status_constants_match_the_python_enum(interfaces):
    ts, names = interfaces
    cls = ts.get_msgdef(names["PositionStatus"]).cls
    constants = {k: v for k, v in vars(cls).items() if CONSTANT_RE.match(k)}
    assert constants == {c.name: c.value for c in PositionCode}
    msg = Path(__file__).parents[2] / "msg" / "PositionStatus.msg"
    for line in msg.read_text().splitlines():
        decl = line.split("#")[0].strip()
        if "=" in decl:
            assert CONSTANT_RE.match(decl.split()[1].split("=")[0]), line


def test_region_position_fields(interfaces):
    """The per-region fields the issue asks for: point, size, valid flag, frame_id (header)."""
    ts, names = interfaces
    fields = _fields(ts, names["RegionPosition"])
    assert list(fields) == ["valid", "header", "center", "size", "valid_pixels",
                            "region_pixels"]
    assert fields["center"][1] == "geometry_msgs/msg/Point"
    assert fields["size"][1] == "geometry_msgs/msg/Vector3"
    assert fields["header"][1] == "std_msgs/msg/Header"
    resp = _fields(ts, names["SpatialQuery_Response"])
    assert resp["positions"][1][0][1] == names["RegionPosition"]          # a sequence of them
    assert resp["positions_status"][1] == names["PositionStatus"]


@pytest.mark.parametrize("required", ["OK", "NO_FRAME", "STALE_FRAME", "INVALID_REQUEST",
                                      "MODEL_NOT_READY", "BUSY", "TIMEOUT", "INFERENCE_ERROR"])
def test_the_issue_statuses_exist(required):
    assert required in Status.__members__


def _fields(ts, full):
    return {name: desc for name, desc in ts.get_msgdef(full).fields}


def test_the_action_goal_is_the_service_request(interfaces):
    ts, names = interfaces
    assert _fields(ts, names["SpatialQueryStream_Goal"]) == _fields(
        ts, names["SpatialQuery_Request"])
    assert list(_fields(ts, names["SpatialQuery_Request"])) == [
        "question", "stamp", "camera", "regions", "limits"]


@pytest.mark.parametrize("target", ["SpatialQuery_Response", "SpatialQueryStream_Result",
                                    "SpatialAnswer"])
def test_results_share_the_fields_fill_result_writes(interfaces, target):
    ts, names = interfaces
    fields = _fields(ts, names[target])
    reference = _fields(ts, names["SpatialQuery_Response"])
    for name in SHARED_RESULT_FIELDS:
        assert fields[name] == reference[name], f"{target}.{name}"


def test_request_and_feedback_types(interfaces):
    ts, names = interfaces
    req = _fields(ts, names["SpatialQuery_Request"])
    assert req["stamp"][1] == "builtin_interfaces/msg/Time"
    assert req["regions"][1][0][1] == names["Region"]                # a sequence of Region
    region = _fields(ts, names["Region"])
    assert region["mask"][1] == "sensor_msgs/msg/Image"
    feedback = _fields(ts, names["SpatialQueryStream_Feedback"])
    assert set(feedback) == {"partial_answer", "elapsed"}
    resp = _fields(ts, names["SpatialQuery_Response"])
    assert resp["header"][1] == "std_msgs/msg/Header"
    assert resp["latency"][1] == "builtin_interfaces/msg/Duration"


def test_every_interface_file_is_built_by_cmake(repo):
    cmake = (repo / "CMakeLists.txt").read_text()
    listed = set(re.findall(r'"((?:msg|srv|action)/[A-Za-z0-9]+\.(?:msg|srv|action))"', cmake))
    assert listed == {p.relative_to(repo).as_posix() for p in interface_files(repo)}
