"""The compiled modules: schemas._wire (the scorer's per-batch Avro codecs),
streams.scoring._table (the decision cache's per-batch loops) and streams.scoring._messages (the
scoring loop's per-message plumbing); the rest of the package metadata is in pyproject.toml."""

from setuptools import Extension, setup

# Every module includes schemas/_buffer.h (the buffer check they share).
SHARED = {
    "extra_compile_args": ["-O2", "-Wall"],
    "include_dirs": ["schemas"],
    "depends": ["schemas/_buffer.h"],
}
setup(
    ext_modules=[
        Extension("schemas._wire", ["schemas/_wire.c"], **SHARED),
        Extension("streams.scoring._table", ["streams/scoring/_table.c"], **SHARED),
        Extension("streams.scoring._messages", ["streams/scoring/_messages.c"], **SHARED),
    ]
)
