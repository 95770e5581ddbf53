"""SMS segment counting: GSM 03.38 (7-bit) when every character fits, else UCS-2."""

from __future__ import annotations

from typing import Literal

__all__ = ["Encoding", "segments"]

Encoding = Literal["gsm7", "ucs2"]

# GSM 03.38 basic character set (one septet each) and its extension table (two septets:
# the escape plus the character).
_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENDED = frozenset("^{}\\[~]|€\f")


def segments(text: str) -> tuple[Encoding, int]:
    """The encoding and number of segments `text` is sent in; raises nothing.

    GSM-7: 160 septets in one segment, 153 per segment when concatenated (the UDH takes 7).
    UCS-2: 70 UTF-16 code units in one, 67 per segment when concatenated. An empty text
    still takes one segment.
    """
    septets = 0
    for char in text:
        if char in _BASIC:
            septets += 1
        elif char in _EXTENDED:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return "ucs2", 1 if units <= 70 else -(-units // 67)
    return "gsm7", 1 if septets <= 160 else -(-septets // 153)
