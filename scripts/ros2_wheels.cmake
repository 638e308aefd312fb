# Passed by scripts/ros2_env.sh as -DCMAKE_PROJECT_INCLUDE: runs right after project().
#
# PyPI's ros-jazzy-* message wheels were built in a manylinux image, and their
# share/<pkg>/cmake/export_<pkg>__rosidl_generator_pyExport.cmake hard-code that machine's Python
# and NumPy include directories (/opt/python/cp311-cp311/...) on the imported targets
# <pkg>::<pkg>__rosidl_generator_py. Building our interfaces against them then fails on a missing
# include directory. This file points every such target at this Python's include directory and
# at numpy.get_include(), once all find_package() calls are done (a deferred call at the end of
# the top directory), without editing any installed file.

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _ros2_wheels_fix_python_includes)

function(_ros2_wheels_fix_python_includes)
  if(NOT Python3_EXECUTABLE)
    message(FATAL_ERROR "ros2_wheels.cmake: pass -DPython3_EXECUTABLE=<the environment's python>")
  endif()
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c
      "import sysconfig, numpy; print(sysconfig.get_paths()['include'] + ';' + numpy.get_include(), end='')"
    OUTPUT_VARIABLE _includes
    RESULT_VARIABLE _result)
  if(NOT _result EQUAL 0)
    message(FATAL_ERROR "ros2_wheels.cmake: ${Python3_EXECUTABLE} cannot tell its include directories")
  endif()
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  set(_fixed 0)
  foreach(_target IN LISTS _targets)
    if(NOT _target MATCHES "__rosidl_generator_py$")
      continue()
    endif()
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    set(_missing FALSE)
    foreach(_dir IN LISTS _dirs)
      if(NOT EXISTS "${_dir}")
        set(_missing TRUE)
      endif()
    endforeach()
    if(_missing)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_includes}")
      math(EXPR _fixed "${_fixed} + 1")
    endif()
  endforeach()
  message(STATUS "ros2_wheels.cmake: Python/NumPy include directories of ${_fixed} imported "
                 "targets set to ${_includes}")
endfunction()
