"""A catalog as one Kafka record: every file, base64 in JSON, with its version.

`tidings catalog publish DIR` writes a bundle to a compacted topic, keyed by catalog name;
workers following the topic load the newest bundle (and refuse a bad one).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from catalog.exceptions import CatalogError
from catalog.layout import digest

__all__ = ["FORMAT", "BundleError", "decode_bundle", "encode_bundle"]

FORMAT = "tidings-catalog/1"


class BundleError(CatalogError):
    """A record on the catalog topic is not a catalog bundle."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(
            f"catalog bundle is unreadable: {cause}. Fix: publish the catalog with "
            "`tidings catalog publish DIR`; other writers must not use the catalog topic"
        )


def encode_bundle(files: Mapping[str, bytes], source: str = "") -> bytes:
    """The bundle of `files` (posix path -> bytes); its version equals the catalog's."""
    doc = {
        "format": FORMAT,
        "version": digest(sorted(files.items())),
        "source": source,
        "files": {name: base64.b64encode(files[name]).decode("ascii") for name in sorted(files)},
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def decode_bundle(data: bytes | None) -> tuple[str, dict[str, bytes]]:
    """(version, files) of a bundle; raises BundleError if it is malformed or tampered with."""
    if not data:
        raise BundleError("the record is empty (a tombstone?)")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError(f"format is not {FORMAT!r}")
    raw = doc.get("files")
    version = doc.get("version")
    if not isinstance(raw, dict) or not isinstance(version, str):
        raise BundleError("'files' must be an object and 'version' a string")
    files: dict[str, bytes] = {}
    for name, text in raw.items():
        if not isinstance(text, str) or name.startswith("/") or ".." in name.split("/"):
            raise BundleError(f"file entry {name!r} is invalid")
        try:
            files[name] = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BundleError(f"file {name!r} is not base64") from None
    actual = digest(sorted(files.items()))
    if actual != version:
        raise BundleError(f"the files hash to {actual}, not to the stated version {version}")
    return version, files
