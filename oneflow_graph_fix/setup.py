"""Builds oneflow_graph_fix.c (the fix for OneFlow 0.9.0's graph race) as a shared library pip installs."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("oneflow_graph_fix", ["oneflow_graph_fix.c"], libraries=["dl", "pthread"])])
