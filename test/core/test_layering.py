"""What may import what: the core never imports ROS (rclpy, message packages, cv_bridge, the ROS
layer), wherever the import stands; the core's modules import each other without a loop; and
building the CLI's parsers imports neither torch nor transformers."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "spatialgeo_core"
# top-level names of ROS 2 (rclpy, the message and launch packages) and of the ROS layer
ROS = {"rclpy", "rosidl_runtime_py", "rosidl_parser", "rcl_interfaces", "builtin_interfaces",
       "std_msgs", "sensor_msgs", "geometry_msgs", "diagnostic_msgs", "lifecycle_msgs",
       "action_msgs", "visualization_msgs", "rosbag2_interfaces", "cv_bridge", "launch",
       "launch_ros", "launch_testing", "ament_index_python", "spatialgeo_ros"}
# functions whose first argument names a module to import
IMPORTING_CALLS = {"import_module", "__import__", "find_spec", "available", "require"}


def imports_of(source: str) -> list[tuple[int, str]]:
    """(line, module name) of every import in `source`: import statements at any depth (in
    functions, classes, branches, try blocks) and calls that import a module named by a string
    (importlib.import_module("x"), optional.available("x"), ...)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            if name in IMPORTING_CALLS and isinstance(arg, ast.Constant) \
                    and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def core_modules() -> dict[str, Path]:
    return {".".join(("spatialgeo_core", *p.relative_to(CORE).with_suffix("").parts))
            .removesuffix(".__init__"): p for p in sorted(CORE.rglob("*.py"))}


def test_the_checker_sees_imports_wherever_they_stand():
    source = textwrap.dedent("""
        import numpy
        def f():
            if True:
                try:
                    from rclpy.node import Node
                except ImportError:
                    import sensor_msgs.msg as m
        class C:
            def g(self):
                importlib.import_module("spatialgeo_ros.node")
                return available("cv_bridge")
    """)
    assert {name.split(".")[0] for _, name in imports_of(source)} == {
        "numpy", "rclpy", "sensor_msgs", "spatialgeo_ros", "cv_bridge"}


def test_the_core_never_imports_ros():
    modules = core_modules()
    assert len(modules) > 80 and "spatialgeo_core.eval.cli" in modules
    bad = [f"{path.relative_to(CORE.parent)}:{line} imports {name}"
           for path in modules.values()
           for line, name in imports_of(path.read_text(encoding="utf-8"))
           if name.split(".")[0] in ROS]
    assert not bad, "\n".join(bad)


def test_core_modules_import_each_other_without_a_loop():
    """Every import counts, also one inside a function (it runs when the function is called):
    the loader once reached the demo this way (pipeline -> default_model -> pipeline)."""
    modules = core_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for _, dep in imports_of(path.read_text(encoding="utf-8")):
            while dep and dep not in modules:       # a name imported from a module or package
                dep = dep.rpartition(".")[0]
            if dep and dep != name:
                deps.add(dep)
        graph[name] = deps
    state: dict[str, int] = {}
    loops: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                loops.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # a package's __init__ importing its own modules is no loop
    loops = [loop for loop in loops if not all(m.startswith(loop[-1] + ".") or m == loop[-1]
                                               for m in loop)]
    assert not loops, loops


def test_building_the_cli_parsers_imports_no_torch():
    code = ("import sys\n"
            "from spatialgeo_core.cli import build_parser\n"
            "p = build_parser()\n"
            "heavy = sorted({'torch', 'transformers'} & set(sys.modules))\n"
            "assert not heavy, heavy\n"
            "print(len(p._subparsers._group_actions[0].choices))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 10                       # every command is there
