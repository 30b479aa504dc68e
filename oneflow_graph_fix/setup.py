"""Builds the C fixes for OneFlow 0.9.0 as shared libraries pip installs: oneflow_graph_fix.c (the graph race) and
oneflow_node_watch.c (deadlines for waits on other nodes, and the line that names a lost node)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("oneflow_graph_fix", ["oneflow_graph_fix.c"], libraries=["dl", "pthread"]),
                   Extension("oneflow_node_watch", ["oneflow_node_watch.c"], libraries=["pthread"])])
