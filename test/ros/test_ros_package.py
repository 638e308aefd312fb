"""The ROS 2 package: package.xml (catkin_pkg), its dependencies, CMakeLists.txt, the launch file,
the executable, and the ROS-free layering of the plain-Python modules."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

from spatialgeo_ros.params import PARAM_NAMES, PARAMS

# import name -> the package.xml key that provides it
IMPORT_KEYS = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs", "builtin_interfaces": "builtin_interfaces",
    "diagnostic_msgs": "diagnostic_msgs", "lifecycle_msgs": "lifecycle_msgs",
    "action_msgs": "action_msgs", "cv_bridge": "cv_bridge", "launch": "launch",
    "launch_ros": "launch_ros", "ament_index_python": "ament_index_python",
    "numpy": "python3-numpy", "PIL": "python3-pil", "yaml": "python3-yaml",
    "torch": "python3-torch", "rosbag2_interfaces": "rosbag2_interfaces",
    "cv2": "python3-opencv", "visualization_msgs": "visualization_msgs",
}
# setup.py install_requires -> package.xml key; None: no rosdep key, installed with pip (the
# README says so and package.xml names them in a comment)
REQUIREMENT_KEYS = {
    "torch": "python3-torch", "transformers": "python3-transformers-pip",
    "safetensors": None, "sentencepiece": None, "protobuf": "python3-protobuf",
    "numpy": "python3-numpy", "pillow": "python3-pil", "pyyaml": "python3-yaml",
    "tqdm": "python3-tqdm",
}
ROS_MODULES = {"rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "builtin_interfaces",
               "diagnostic_msgs", "lifecycle_msgs", "action_msgs", "cv_bridge", "launch",
               "launch_ros", "ament_index_python", "rosidl_runtime_py", "visualization_msgs",
               "geometry_msgs"}
OWN = {"spatialgeo_core", "spatialgeo_ros"}


@pytest.fixture(scope="module")
def package(repo):
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(repo / "package.xml"))
    pkg.validate()
    return pkg


def runtime_keys(pkg) -> set[str]:
    return {d.name for d in pkg.exec_depends} | {d.name for d in pkg.build_export_depends}


def imported_top_level(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


EXECUTABLES = ("spatialgeo_node", "eval_live")      # scripts/ -> lib/spatialgeo_ros/


def ros_side_files(repo):
    return (sorted((repo / "spatialgeo_ros").glob("*.py"))
            + sorted((repo / "launch").glob("*.py"))
            + [repo / "scripts" / name for name in EXECUTABLES])


def test_package_xml_is_valid(package):
    assert package.name == "spatialgeo_ros"
    assert package.package_format == 3
    assert package.get_build_type() == "ament_cmake"
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= {
        d.name for d in package.buildtool_depends}
    assert "rosidl_interface_packages" in {g.name for g in package.member_of_groups}
    assert "rosidl_default_runtime" in runtime_keys(package)
    assert package.licenses and package.maintainers


def test_every_import_of_the_ros_side_is_declared(repo, package):
    declared = runtime_keys(package)
    for path in ros_side_files(repo):
        for name in imported_top_level(path) - OWN - set(sys.stdlib_module_names):
            assert name in IMPORT_KEYS, f"{path.name} imports {name}: add it to IMPORT_KEYS"
            assert IMPORT_KEYS[name] in declared, (
                f"{path.name} imports {name}; package.xml lacks <exec_depend>"
                f"{IMPORT_KEYS[name]}</exec_depend>")


def test_spatialgeo_core_requirements_are_declared(repo, package):
    setup = ast.parse((repo / "setup.py").read_text())
    requires = next(kw.value for node in ast.walk(setup) if isinstance(node, ast.Call)
                    for kw in node.keywords if kw.arg == "install_requires")
    names = {re.split(r"[<>=!~ \[]", ast.literal_eval(r))[0].lower()
             for r in requires.elts}
    xml = (repo / "package.xml").read_text()
    for name in names:
        assert name in REQUIREMENT_KEYS, f"setup.py requires {name}: map it to a rosdep key"
        key = REQUIREMENT_KEYS[name]
        if key is None:
            assert name in xml, f"{name} has no rosdep key: say so in a package.xml comment"
        else:
            assert key in runtime_keys(package), f"package.xml lacks {key} (for {name})"


def test_interface_dependencies_are_declared(repo, package):
    used = set()
    for folder in ("msg", "srv", "action"):
        for path in (repo / folder).glob("*"):
            used |= set(re.findall(r"^\s*([a-z_]+)/[A-Z]\w*", path.read_text(), re.M))
    used -= {"spatialgeo_ros"}
    assert used == {"std_msgs", "sensor_msgs", "builtin_interfaces", "geometry_msgs"}
    build = {d.name for d in package.build_depends}
    cmake = (repo / "CMakeLists.txt").read_text()
    deps_line = re.search(r"DEPENDENCIES ([^\n)]*)", cmake).group(1).split()
    for dep in used:
        assert dep in build and dep in runtime_keys(package), dep
        assert dep in deps_line and f"find_package({dep} REQUIRED)" in cmake, dep
    assert "action_msgs" in build | runtime_keys(package)       # rosidl needs it for actions


def test_cmake_installs_the_package_the_working_way(repo):
    cmake = (repo / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(spatialgeo_ros\)", cmake, re.M)
    assert "rosidl_generate_interfaces(${PROJECT_NAME}" in cmake
    assert "ament_python_install_package(spatialgeo_core)" in cmake
    # our modules go into the generated Python package file by file (install(FILES) links them
    # under --symlink-install; install(DIRECTORY) with FILES_MATCHING copies them); our
    # __init__.py must not replace the generated one
    assert re.search(r'install\(FILES \$\{_node_modules\}\s+DESTINATION "\$\{_python_install_dir'
                     r'\}/\$\{PROJECT_NAME\}"', cmake)
    assert re.search(r'list\(FILTER _node_modules EXCLUDE REGEX "/__init__', cmake)
    assert not re.search(r"^\s*FILES_MATCHING", cmake, re.M)
    assert "ament_python_install_package(${PROJECT_NAME}" not in cmake   # rosidl_python#141
    assert "install(PROGRAMS scripts/spatialgeo_node scripts/eval_live" in cmake
    assert "DESTINATION lib/${PROJECT_NAME}" in cmake
    assert re.search(r"install\(DIRECTORY launch\s+DESTINATION share/\$\{PROJECT_NAME\}", cmake)
    assert "ament_package()" in cmake.splitlines()[-1]


@pytest.mark.parametrize("name", EXECUTABLES)
def test_executable_scripts(repo, name):
    """What `ros2 run` needs of a script (that spatialgeo_node runs the node, the real-ROS tests
    show by starting the installed one)."""
    script = repo / "scripts" / name
    assert script.read_text().startswith("#!/usr/bin/env python3\n")
    assert os.access(script, os.X_OK), f"chmod +x scripts/{name} (git keeps the mode)"


def test_eval_live_runs_as_its_own_executable(repo):
    """`ros2 run spatialgeo_ros eval_live --help` answers from the ROS layer, without rclpy or
    torch (the core CLI has no eval-live)."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['eval_live', '--help']\n"
            f"runpy.run_path({str(repo / 'scripts' / 'eval_live')!r}, run_name='__main__')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "usage: eval_live" in result.stdout and "--questions" in result.stdout
    from spatialgeo_core.cli import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval-live", "--help"])


def test_our_init_only_joins_the_installed_package(repo):
    """Our __init__.py is never installed (the generated one stays); in the source folder it only
    extends the package path, so that a source folder first on sys.path does not hide the
    generated interfaces (`python -m pytest` from the repository root in a sourced workspace)."""
    tree = ast.parse((repo / "spatialgeo_ros" / "__init__.py").read_text())
    assert [ast.unparse(node) for node in tree.body] == [
        "from pkgutil import extend_path", "__path__ = extend_path(__path__, __name__)"]


def test_source_folder_first_on_sys_path_keeps_the_installed_package(repo, tmp_path):
    """A stand-in for the installed package (a generated `msg` module) later on sys.path than
    the repository root stays importable through the source package."""
    installed = tmp_path / "spatialgeo_ros"
    (installed / "msg").mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    (installed / "msg" / "__init__.py").write_text("GENERATED = True\n")
    code = ("import sys\n"
            f"sys.path[:0] = [{str(repo)!r}, {str(tmp_path)!r}]\n"
            "import spatialgeo_ros, spatialgeo_ros.msg, spatialgeo_ros.params\n"
            f"assert spatialgeo_ros.__file__.startswith({str(repo)!r})\n"
            "assert spatialgeo_ros.msg.GENERATED\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def _launch_arguments(repo):
    tree = ast.parse((repo / "launch" / "bringup.launch.py").read_text())
    table = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and node.targets[0].id == "ARGUMENTS")
    return {entry.elts[0].value: entry.elts[2] for entry in table.elts}


def test_launch_file_declares_the_described_arguments(repo):
    args = _launch_arguments(repo)
    assert set(args) == {"namespace", "params_file", "model_path", "load_4bit", "device",
                         "image_topic", "camera_info_topic", "depth_topic", "use_sim_time",
                         "log_level", "autostart"}
    for name, description in args.items():
        assert isinstance(description, ast.Constant) and len(description.value) > 10, name
    text = (repo / "launch" / "bringup.launch.py").read_text()
    assert "DeclareLaunchArgument(name, default_value=default, description=description)" in text
    assert '"spatialgeo_params.yaml"' in text and "LifecycleNode(" in text
    assert "TRANSITION_CONFIGURE" in text and "TRANSITION_ACTIVATE" in text
    # the activate handler fires once: a later cleanup + configure by hand stays inactive
    assert text.count("OnStateTransition(") == 1 and "handle_once=True" in text


@pytest.mark.ros
def test_the_node_declares_every_parameter_from_the_table():
    """The node as ROS sees it: every entry of params.PARAMS declared, with its default, its
    description and its range."""
    rclpy = pytest.importorskip("rclpy", reason="needs a ROS 2 runtime (rclpy is not on PyPI)")
    node_module = pytest.importorskip(
        "spatialgeo_ros.node", reason="needs the generated spatialgeo_ros interfaces: colcon "
                                      "build, then source install/setup.bash")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = node_module.SpatialGeoNode(context=context)
        try:
            assert set(node.list_parameters([], 0).names) >= set(PARAM_NAMES)
            for spec in PARAMS:
                value = node.get_parameter(spec.name).value
                default = list(spec.default) if spec.kind == "str_array" else spec.default
                assert value == default, spec.name
                described = node.describe_parameters([spec.name])[0]
                assert described.description == spec.description, spec.name
                if spec.kind == "int":
                    assert (described.integer_range[0].from_value,
                            described.integer_range[0].to_value) == (spec.min, spec.max)
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    assert len(PARAMS) >= 20


PLAIN_MODULES = ("params", "conversions", "geometry_conversions", "request_validation",
                 "outcomes", "inference_queue", "query_service", "position_source", "diagnostics",
                 "live_eval")


def test_plain_modules_import_without_ros():
    code = ("import sys\n"
            "import spatialgeo_core.frames\n"
            + "".join(f"import spatialgeo_ros.{name}\n" for name in PLAIN_MODULES) +
            f"ros = set({sorted(ROS_MODULES)!r})\n"
            "bad = sorted({m.split('.')[0] for m in sys.modules} & ros)\n"
            "assert not bad, bad\n"
            "assert 'torch' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_only_the_executables_import_rclpy(repo):
    """rclpy and the message packages: the node, the eval_live client, the launch file and the
    scripts that start them; every other module of the ROS layer is plain Python."""
    assert {p.stem for p in (repo / "spatialgeo_ros").glob("*.py")} == {
        "__init__", "node", "live_eval_client", *PLAIN_MODULES}
    for path in ros_side_files(repo):
        # conversions.py: cv_bridge imported inside decode_compressed only, where installed
        if path.name in ("node.py", "live_eval_client.py", "bringup.launch.py", *EXECUTABLES):
            continue
        if path.name == "conversions.py":
            assert imported_top_level(path) & ROS_MODULES == {"cv_bridge"}
            continue
        assert not imported_top_level(path) & ROS_MODULES, path.name
    assert not imported_top_level(repo / "spatialgeo_core" / "frames.py") & ROS_MODULES
