"""Declares the optional C accelerator; everything else is in pyproject.toml.

RAPIDWS_BUILD_EXTENSION=yes makes a failed build an error; =no skips the
build (the pure-Python twin is used); unset, a failed build (no compiler) is
skipped with a warning and the install goes on.
"""

import os
import sys

from setuptools import Extension, setup

mode = os.environ.get("RAPIDWS_BUILD_EXTENSION", "")
extensions = []
if mode != "no":
    extensions.append(
        Extension(
            "rapidws.speedups._c",
            [
                "src/rapidws/speedups/_c.c",
                "src/rapidws/speedups/_connection.c",
                "src/rapidws/speedups/_handshake.c",
                "src/rapidws/speedups/_http.c",
            ],
            depends=["src/rapidws/speedups/_core.h"],
            optional=mode != "yes",
            extra_compile_args=[] if sys.platform == "win32" else ["-O3", "-falign-functions=64"],
        )
    )

setup(ext_modules=extensions)
