"""The hot loops of the protocol, chosen in this one place.

The protocol imports masking, UTF-8 decoding and frame-header parsing from
here only, so that a C twin can replace :mod:`rapidws.speedups.pure` (the
reference it must match) without touching the protocol. :data:`IMPLEMENTATION`
names the one in use.
"""

from __future__ import annotations

from .pure import Utf8Decoder, apply_mask, parse_frame_header

__all__ = ["IMPLEMENTATION", "Utf8Decoder", "apply_mask", "parse_frame_header"]

# No C twin is built yet (see the speed issue); the pure twin is the only one.
IMPLEMENTATION = "python"
