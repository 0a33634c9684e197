"""setup.py for tools and users that expect one beside package.xml; the metadata lives in pyproject.toml.

`pip install .` builds the Python package (ros_seg and the `ros-seg` command) from pyproject.toml either way;
the ROS 2 package (messages, nodes, launch files) is built by colcon through package.xml and CMakeLists.txt.
"""
from setuptools import setup

setup()
