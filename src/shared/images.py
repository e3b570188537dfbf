"""Images a tool produced, as the gateway's answer names them: data URIs, or signed URLs to download.

The answer is untrusted input. A URL is fetched only when the operator allows its scheme, host and port
(ImageDownloadAllowedUrls), without following redirects, streamed under a byte cap and a deadline. Bytes
are kept only when they are an image format the contract lists, judged by their magic bytes (never by
Content-Type). A URL shows up in errors and logs without its query string: a signed URL's query carries
its credentials.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args
from urllib.parse import urlsplit

from shared.deadline import DeadlineExceeded, within
from shared.errors import PipelineError, TransientGatewayError
from shared.media import UnsupportedMediaError, detect
from shared.models import ImageFormat

if TYPE_CHECKING:
    import httpx

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # a generated image is a few MB; nothing the contract sends is larger
DOWNLOAD_SECONDS = 30.0
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
DEFAULT_PORTS = {"https": 443, "http": 80}


class ImageRejectedError(PipelineError):
    """An image the answer names cannot be kept: not allowed, too large, too slow or not an image."""


def without_query(url: str) -> str:
    """The URL as it may be shown: no user info, query string or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number, an unclosed [ ...
        return "a URL that cannot be parsed"
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class UrlAllowlist:
    """`scheme://host[:port]` patterns; the host may start with `*.` (any subdomain)."""

    patterns: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> UrlAllowlist:
        return cls(tuple(p.strip().rstrip("/") for p in text.split(",") if p.strip()))

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:  # a port that is not a number
            return False
        if parts.username or parts.password or not parts.hostname:
            return False
        for pattern in self.patterns:
            allowed = urlsplit(pattern)
            if allowed.scheme != parts.scheme or not allowed.hostname:
                continue
            if (allowed.port or DEFAULT_PORTS.get(allowed.scheme)) != port:
                continue
            if fnmatch.fnmatchcase(parts.hostname.lower(), allowed.hostname.lower()):
                return True
        return False


def image_of(data: bytes, where: str) -> tuple[str, bytes]:
    """(content type, bytes) when `data` is an image format the contract lists."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageRejectedError(f"{where}: over {MAX_IMAGE_BYTES} bytes")
    try:
        found = detect(data[:8192], size=len(data))
    except UnsupportedMediaError as error:
        raise ImageRejectedError(f"{where}: not an image ({error.detected})") from None
    if found.kind != "image" or found.format not in get_args(ImageFormat):
        raise ImageRejectedError(f"{where}: not an image the contract lists ({found.kind} {found.format})")
    return CONTENT_TYPES[found.format], data


def decode_data_uri(uri: str, index: int) -> tuple[str, bytes]:
    where = f"image {index}"
    header, _, payload = uri.partition(",")
    if not header.startswith("data:") or ";base64" not in header:
        raise ImageRejectedError(f"{where}: not a base64 data URI")
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ImageRejectedError(f"{where}: over {MAX_IMAGE_BYTES} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise ImageRejectedError(f"{where}: the data URI is not valid base64") from None
    return image_of(data, where)


def download(
    url: str,
    http: httpx.Client,
    allowlist: UrlAllowlist,
    *,
    seconds: float = DOWNLOAD_SECONDS,
) -> tuple[str, bytes]:
    """The image at `url`, within MAX_IMAGE_BYTES and `seconds` however the server sends its bytes."""
    import httpx

    shown = without_query(url)
    if not allowlist.allows(url):
        raise ImageRejectedError(f"download from {shown} is not allowed (ImageDownloadAllowedUrls)")

    def fetch() -> bytes:
        chunks: list[bytes] = []
        received = 0
        with http.stream(
            "GET", url, timeout=httpx.Timeout(min(seconds, 10.0)), follow_redirects=False
        ) as reply:
            if reply.status_code in (429, 500, 502, 503, 504):
                raise TransientGatewayError(f"download from {shown}: HTTP {reply.status_code}")
            if reply.status_code != 200:
                # No body in the message: an S3 error page can echo the request's signature.
                raise ImageRejectedError(f"download from {shown}: HTTP {reply.status_code}")
            for chunk in reply.iter_bytes():
                received += len(chunk)
                if received > MAX_IMAGE_BYTES:
                    raise ImageRejectedError(f"download from {shown}: over {MAX_IMAGE_BYTES} bytes")
                chunks.append(chunk)
        return b"".join(chunks)

    try:
        data = within(seconds, fetch, name="download")  # however the server paces its bytes
    except DeadlineExceeded:
        raise ImageRejectedError(f"download from {shown}: took over {seconds:g} s") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError, ValueError):
        raise ImageRejectedError(f"download from {shown}: not a URL that can be fetched") from None
    except httpx.HTTPError as error:
        raise TransientGatewayError(f"download from {shown}: {type(error).__name__}") from None
    return image_of(data, f"download from {shown}")
