"""Bring up spatialgeo_node, configure it (load the model) and activate it.

    ros2 launch spatialgeo_ros bringup.launch.py
    ros2 launch spatialgeo_ros bringup.launch.py model_path:=/models/spatialgeo-7b device:=cuda \
        load_4bit:=true image_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info

`ros2 launch spatialgeo_ros bringup.launch.py --show-args` lists the arguments. model_path,
load_4bit and device override params_file only when given: left empty, the YAML decides (its
model.path "" is the embedded default model).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from lifecycle_msgs.msg import Transition

from spatialgeo_ros.params import launch_overrides, parse_bool_arg

PACKAGE = "spatialgeo_ros"

ARGUMENTS = (
    ("namespace", "", "Namespace of the node, its topics, service and action."),
    ("params_file", os.path.join(get_package_share_directory(PACKAGE), "launch",
                                 "spatialgeo_params.yaml"),
     "YAML file of node parameters (/**: ros__parameters:)."),
    ("model_path", "",
     "Local model directory; empty = params_file's model.path ('' there = embedded default)."),
    ("load_4bit", "",
     "true/false: model.quantization 4bit / none (the language model); empty = params_file."),
    ("device", "", "auto, cpu, cuda or cuda:N; empty = params_file's model.device."),
    ("image_topic", "image",
     "Topic of the camera images (sensor_msgs/Image, or CompressedImage with "
     "cameras.transport: compressed); remaps the node's `image`."),
    ("camera_info_topic", "camera_info",
     "Topic of the camera's sensor_msgs/CameraInfo; remaps the node's `camera_info`."),
    ("depth_topic", "depth",
     "Topic of the depth image registered to the camera's images (16UC1 or 32FC1, read with "
     "cameras.depth: true); remaps the node's `depth`."),
    ("use_sim_time", "false", "true: use the /clock topic (rosbag replay, simulation)."),
    ("log_level", "info", "Log level of the node: debug, info, warn, error or fatal."),
    ("autostart", "true", "true: configure (load the model) and activate the node at start."),
)


def _launch_node(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    overrides = launch_overrides(arg["model_path"], arg["load_4bit"], arg["device"])
    # strings wrapped so that launch does not read "1e3" or "true" in a path as YAML
    parameters = {name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
                  for name, value in overrides.items()}
    parameters["use_sim_time"] = parse_bool_arg("use_sim_time", arg["use_sim_time"])

    node = LifecycleNode(
        package=PACKAGE,
        executable="spatialgeo_node",
        name="spatialgeo_node",
        namespace=arg["namespace"],
        output="screen",
        emulate_tty=True,
        parameters=[arg["params_file"], parameters],
        remappings=[("image", arg["image_topic"]),
                    ("camera_info", arg["camera_info_topic"]),
                    ("depth", arg["depth_topic"])],
        ros_arguments=["--log-level", arg["log_level"]],
    )
    actions = [node]
    if parse_bool_arg("autostart", arg["autostart"]):
        actions += [
            # the first configure that succeeds (model loaded) -> activate, once: the handler
            # is removed after it fires, so a later cleanup + configure by hand leaves the node
            # inactive and the README's `ros2 lifecycle set ... activate` is the one that works
            RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
                entities=[EmitEvent(event=ChangeState(
                    lifecycle_node_matcher=matches_action(node),
                    transition_id=Transition.TRANSITION_ACTIVATE))],
                handle_once=True)),
            # start -> configure (waits for the node's lifecycle services)
            EmitEvent(event=ChangeState(
                lifecycle_node_matcher=matches_action(node),
                transition_id=Transition.TRANSITION_CONFIGURE)),
        ]
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, default, description in ARGUMENTS]
        + [OpaqueFunction(function=_launch_node)])
