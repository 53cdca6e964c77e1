"""The compiled modules: schemas._wire (the scorer's per-batch Avro codecs) and
streams.scoring._table (the decision cache's per-batch loops); the rest of the package metadata
is in pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall"]
setup(
    ext_modules=[
        Extension("schemas._wire", ["schemas/_wire.c"], extra_compile_args=FLAGS),
        Extension("streams.scoring._table", ["streams/scoring/_table.c"], extra_compile_args=FLAGS),
    ]
)
