"""The hot loops of the protocol, chosen in this one place.

The protocol imports masking, UTF-8 validation and frame-header parsing from
here only. The C twin (``_c``, built with the package when a compiler is
there) is used when it imports; otherwise, or when the environment variable
``RAPIDWS_SPEEDUPS=python`` is set, the pure-Python twin in
:mod:`rapidws.speedups.pure`, which is the reference both must match.
:data:`IMPLEMENTATION` names the one in use: ``"c"`` or ``"python"``.
"""

from __future__ import annotations

import os

__all__ = ["IMPLEMENTATION", "Utf8Validator", "apply_mask", "parse_frame_header"]

IMPLEMENTATION: str
if os.environ.get("RAPIDWS_SPEEDUPS") == "python":
    from .pure import Utf8Validator, apply_mask, parse_frame_header

    IMPLEMENTATION = "python"
else:
    try:
        from ._c import Utf8Validator, apply_mask, parse_frame_header  # type: ignore[assignment]
    except ImportError:
        from .pure import Utf8Validator, apply_mask, parse_frame_header

        IMPLEMENTATION = "python"
    else:
        IMPLEMENTATION = "c"
