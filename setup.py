"""The one compiled module, schemas._wire (the scorer's per-batch Avro codecs); the rest of the
package metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("schemas._wire", ["schemas/_wire.c"], extra_compile_args=["-O2", "-Wall"])
    ]
)
