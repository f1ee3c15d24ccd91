"""Packages: zeekml/* plus the top-level onnx_models/ installed as zeekml.onnx_models."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["zeekml", "zeekml.*"]) + ["zeekml.onnx_models"],
    package_dir={"zeekml.onnx_models": "onnx_models"},
)
