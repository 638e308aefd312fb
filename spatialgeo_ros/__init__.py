# This source folder and the package that colcon installs (rosidl's generated msg/srv/action
# modules, with copies of or links to the modules here) share the name spatialgeo_ros. Whichever
# comes first on sys.path (the repository root does when Python runs from it), the other one's
# modules stay importable through this package's path. CMakeLists.txt does not install this file.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
