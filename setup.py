"""Packaging entry point.

Metadata lives in pyproject.toml. The native CPU kernel (kernels/, issue #3)
will be built here against the installed TensorFlow's ``tf.sysconfig`` flags;
until it lands the package is pure Python.
"""

from setuptools import setup

setup()
