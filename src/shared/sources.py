"""Where an item's bytes come from: memory, a local file or an S3 object. Each can say its size, give its
first bytes, and open a fresh stream over all of them (once per attempt to send)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from botocore.exceptions import ClientError

from shared.errors import TRANSIENT_AWS_CODES, SourceNotFoundError, TransientStoreError, aws_error_code


class ItemSource(Protocol):
    name: str
    content_type: str | None

    @property
    def size(self) -> int: ...

    def head(self, count: int) -> bytes: ...

    def open(self) -> BinaryIO: ...


@dataclass(frozen=True)
class BytesSource:
    data: bytes
    name: str = "item"
    content_type: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def head(self, count: int) -> bytes:
        return self.data[:count]

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)


@dataclass(frozen=True)
class FileSource:
    path: Path
    content_type: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def size(self) -> int:
        return os.stat(self.path).st_size

    def head(self, count: int) -> bytes:
        with open(self.path, "rb") as stream:
            return stream.read(count)

    def open(self) -> BinaryIO:
        return open(self.path, "rb")


def raise_for_s3(error: ClientError, what: str) -> None:
    code = aws_error_code(error)
    if code in TRANSIENT_AWS_CODES:
        raise TransientStoreError(f"{what}: S3 {code}") from error
    if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket", "NoSuchVersion", "403", "AccessDenied"):
        raise SourceNotFoundError(f"{what}: S3 says {code}") from error
    if code in ("PreconditionFailed", "412"):
        raise SourceNotFoundError(f"{what}: the object changed since it was announced") from error
    raise error


@dataclass
class S3Source:
    """An S3 object pinned to one version (or ETag), so every read sees the bytes that were HEADed."""

    client: Any = field(repr=False)
    bucket: str
    key: str
    version_id: str | None = None
    _head: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def metadata_head(self) -> dict[str, Any]:
        if self._head is None:
            try:
                self._head = self.client.head_object(**self._object_args())
            except ClientError as error:
                raise_for_s3(error, f"HEAD {self.uri}")
        return self._head

    @property
    def size(self) -> int:
        return int(self.metadata_head()["ContentLength"])

    @property
    def content_type(self) -> str | None:
        return self.metadata_head().get("ContentType")

    @property
    def user_metadata(self) -> dict[str, str]:
        return dict(self.metadata_head().get("Metadata") or {})

    def head(self, count: int) -> bytes:
        if self.size == 0:
            return b""
        return self._get(Range=f"bytes=0-{count - 1}").read()

    def open(self) -> BinaryIO:
        return self._get()

    def _object_args(self) -> dict[str, str]:
        args = {"Bucket": self.bucket, "Key": self.key}
        if self.version_id:
            args["VersionId"] = self.version_id
        return args

    def _get(self, **extra: str) -> Any:
        args = self._object_args()
        etag = self.metadata_head().get("ETag")
        if etag and not self.version_id:
            args["IfMatch"] = etag
        try:
            return self.client.get_object(**args, **extra)["Body"]
        except ClientError as error:
            raise_for_s3(error, f"GET {self.uri}")
            raise


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:] or uri.endswith("/"):
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key
