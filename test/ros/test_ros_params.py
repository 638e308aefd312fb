"""params: the declaration table, its validation, the default YAML and the launch overrides."""
from __future__ import annotations

import pytest
import yaml

from spatialgeo_ros.params import (
    PARAM_NAMES,
    PARAMS,
    camera_topics,
    defaults,
    depth_topics,
    flatten_yaml_params,
    launch_overrides,
    params_from_values,
    parse_bool_arg,
)


def test_table_is_well_formed():
    assert len(set(PARAM_NAMES)) == len(PARAM_NAMES)
    for spec in PARAMS:
        assert spec.description.strip(), spec.name
        assert "." in spec.name, f"{spec.name}: parameters live in dotted groups"
        if spec.kind in ("int", "float"):
            assert spec.min is not None and spec.max is not None, spec.name
            assert spec.min <= spec.default <= spec.max, spec.name
        if spec.choices:
            assert spec.kind == "str" and spec.default in spec.choices, spec.name


def test_defaults_give_the_documented_node():
    p = params_from_values({})
    assert p.model.path is None and p.model.device == "auto" and p.model.quantization == "none"
    assert p.model.dtype is None and p.model.max_cached_frames == 2
    assert p.cameras.names == ("camera",) and p.cameras.qos == "sensor_data"
    assert p.cameras.transport == "raw"
    assert p.frames.stamp_tolerance == 0.05 and p.frames.max_age == 1.0
    assert p.query.max_pending == 4 and p.query.timeout == 30.0
    assert params_from_values(defaults()) == p


def test_values_are_normalised():
    p = params_from_values({"query.timeout": 5, "cameras.names": ["front", "wrist"]})
    assert p.query.timeout == 5.0 and isinstance(p.query.timeout, float)
    assert p.cameras.names == ("front", "wrist")


@pytest.mark.parametrize("values, match", [
    ({"model.pth": "x"}, "unknown parameter"),
    ({"query.max_pending": "4"}, "query.max_pending must be of type int"),
    ({"query.max_pending": True}, "query.max_pending must be of type int"),
    ({"model.quantization": 4}, "model.quantization must be of type str"),
    ({"query.max_pending": 0}, "query.max_pending must be >= 1"),
    ({"frames.stamp_tolerance": -0.1}, "frames.stamp_tolerance must be >= 0"),
    ({"cameras.qos": "fast"}, "cameras.qos must be one of: sensor_data, reliable"),
    ({"model.attn_implementation": "flash"}, "model.attn_implementation must be one of"),
    ({"model.device": "gpu"}, "model.device must be auto, cpu, cuda or cuda:N"),
    ({"model.quantization": "int4"}, "model.quantization must be one of: none, 4bit, 8bit"),
    ({"model.max_cached_frames": 0}, "model.max_cached_frames must be >= 1"),
    ({"query.timeout": 200.0}, r"query.timeout \(200.0\) must not exceed query.max_timeout"),
    ({"query.max_new_tokens": 600}, "must not exceed query.max_new_tokens_limit"),
    ({"cameras.names": []}, "at least one camera"),
    ({"cameras.names": ["front", "front"]}, "duplicates"),
    ({"cameras.names": ["front/left"]}, "not a valid name"),
    ({"cameras.names": "front"}, "must be of type str_array"),
])
def test_invalid_values_name_the_parameter(values, match):
    with pytest.raises(ValueError, match=match):
        params_from_values(values)


def test_device_forms():
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert params_from_values({"model.device": device}).model.device == device


def test_model_parameters_are_the_cores_load_options():
    from spatialgeo_core.load_options import LoadOptions

    p = params_from_values({"model.path": "/models/sg7b", "model.quantization": "4bit",
                            "model.dtype": "float16", "model.max_cached_frames": 3})
    assert p.model == LoadOptions(path="/models/sg7b", device="auto", dtype="float16",
                                  quantization="4bit", max_cached_frames=3)


def test_camera_topics_are_relative():
    assert camera_topics(("camera",)) == {"camera": ("image", "camera_info")}
    assert camera_topics(("front", "wrist")) == {
        "front": ("front/image", "front/camera_info"),
        "wrist": ("wrist/image", "wrist/camera_info")}
    assert depth_topics(("camera",)) == {"camera": "depth"}
    assert depth_topics(("front", "wrist")) == {"front": "front/depth", "wrist": "wrist/depth"}


def test_depth_and_output_parameters_reach_the_dataclasses():
    p = params_from_values({})
    assert (p.cameras.depth, p.cameras.rectified, p.frames.depth_tolerance) == (False, False,
                                                                                0.02)
    assert p.output.publish_annotated and p.output.publish_markers
    p = params_from_values({"cameras.depth": True, "cameras.rectified": True,
                            "frames.depth_tolerance": 0.1, "output.publish_annotated": False,
                            "output.publish_markers": False})
    assert (p.cameras.depth, p.cameras.rectified, p.frames.depth_tolerance) == (True, True, 0.1)
    assert not p.output.publish_annotated and not p.output.publish_markers
    with pytest.raises(ValueError, match="frames.depth_tolerance must be <= 1.0"):
        params_from_values({"frames.depth_tolerance": 2.0})


def test_default_yaml_holds_exactly_the_declared_parameters(repo):
    tree = yaml.safe_load((repo / "launch" / "spatialgeo_params.yaml").read_text())
    assert list(tree) == ["/**"] and list(tree["/**"]) == ["ros__parameters"]
    flat = flatten_yaml_params(tree["/**"]["ros__parameters"])
    assert set(flat) == set(PARAM_NAMES)
    for spec in PARAMS:
        value = flat[spec.name]
        # ROS 2 will not put an int into a double parameter: the YAML must say 1.0, not 1
        expected = list if spec.kind == "str_array" else type(spec.default)
        assert type(value) is expected, f"{spec.name}: {value!r}"
        default = list(spec.default) if spec.kind == "str_array" else spec.default
        assert value == default, f"{spec.name}: YAML {value!r} != declared {default!r}"
    assert params_from_values(flat) == params_from_values({})


def test_launch_overrides_only_what_is_given():
    assert launch_overrides("", "", "") == {}
    assert launch_overrides(" /models/sg7b ", "true", "cuda:0") == {
        "model.path": "/models/sg7b", "model.quantization": "4bit", "model.device": "cuda:0"}
    assert launch_overrides("", "False", "") == {"model.quantization": "none"}
    with pytest.raises(ValueError, match="load_4bit must be true or false"):
        launch_overrides("", "maybe", "")
    with pytest.raises(ValueError, match="device must be"):
        launch_overrides("", "", "tpu")
    assert parse_bool_arg("use_sim_time", "TRUE") is True
