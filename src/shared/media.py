"""What an item is, judged by its leading bytes, and the gateway block format it maps to.

Magic bytes decide. The name's extension and the content type are hints, used only where the bytes leave a
choice open (which text format, an OOXML package whose parts lie beyond the head, an old QuickTime file).
"""

import codecs
import csv
import json
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Literal, get_args

from shared import errors
from shared.models import DocumentFormat, ImageFormat, VideoFormat

MediaKind = Literal["image", "video", "document", "text"]

# Enough for every check below: the EBML header, the first ZIP local headers of an OOXML package, and a few
# lines of text. Callers fetch this much first (an S3 ranged GET) and the rest only once the item is accepted.
HEAD_BYTES = 8192

SUPPORTED_SUMMARY = (
    f"{', '.join(get_args(ImageFormat))} images; {', '.join(get_args(VideoFormat))} videos; "
    f"{', '.join(get_args(DocumentFormat))} documents; utf-8 text"
)


@dataclass(frozen=True)
class DetectedMedia:
    kind: MediaKind
    format: str
    label: str


class UnsupportedMediaError(errors.UnsupportedMediaError):
    """The item is not something the gateway takes; `detected` names what it is instead."""

    def __init__(self, detected: str) -> None:
        super().__init__(detected, f"unsupported file type: {detected} (supported: {SUPPORTED_SUMMARY})")


def _media(kind: MediaKind, fmt: str) -> DetectedMedia:
    return DetectedMedia(kind=kind, format=fmt, label=kind.capitalize())


# --- hints --------------------------------------------------------------------------------------------------

# Formats a hint can name. A hint decides only the text format, an OOXML package whose parts lie beyond the
# head, and a QuickTime file without ftyp; everywhere else the bytes have already decided.
_EXTENSION_HINTS = {
    "txt": "txt",
    "text": "txt",
    "md": "md",
    "markdown": "md",
    "json": "json",
    "html": "html",
    "htm": "html",
    "xml": "xml",
    "yaml": "yaml",
    "yml": "yaml",
    "csv": "csv",
    "docx": "docx",
    "xlsx": "xlsx",
    "mp4": "mp4",
    "m4v": "mp4",
    "mov": "mov",
}
_CONTENT_TYPE_HINTS = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "application/json": "json",
    "text/json": "json",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/xml": "xml",
    "text/xml": "xml",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
    "text/x-yaml": "yaml",
    "text/csv": "csv",
    "application/csv": "csv",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
}


def _hint(name: str | None, content_type: str | None) -> str | None:
    """The format the name or content type suggests.

    The extension wins: S3 content types are often a client's default rather than a statement.
    """
    if name:
        base = re.split(r"[/\\]", name)[-1]
        if "." in base:
            by_extension = _EXTENSION_HINTS.get(base.rsplit(".", 1)[1].lower())
            if by_extension:
                return by_extension
    if content_type:
        return _CONTENT_TYPE_HINTS.get(content_type.split(";", 1)[0].strip().lower())
    return None


# --- images -------------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_HEADER_LEN = 8 + 25  # signature, then the IHDR chunk (length, type, 13 data bytes, CRC)
_PNG_MIN_SIZE = _PNG_HEADER_LEN + 12 + 12 + 10  # plus an IDAT holding the smallest zlib stream, and IEND
_PNG_IEND = b"IEND\xaeB`\x82"


def _check_png(head: bytes, whole: bool, size: int | None) -> DetectedMedia:
    if len(head) < _PNG_HEADER_LEN or (size is not None and size < _PNG_MIN_SIZE):
        raise UnsupportedMediaError("truncated png")
    if head[12:16] != b"IHDR":
        raise UnsupportedMediaError("corrupt png")
    # Only when the head is the whole file can the end be seen: an upload cut short has no IEND chunk.
    if whole and _PNG_IEND not in head:
        raise UnsupportedMediaError("truncated png")
    return _media("image", "png")


def _is_bmp(head: bytes) -> bool:
    # "BM" alone also starts plain text, so require the reserved zeros and a known DIB header size.
    if len(head) < 18 or head[:2] != b"BM" or head[6:10] != b"\0\0\0\0":
        return False
    return struct.unpack_from("<I", head, 14)[0] in (12, 40, 52, 56, 64, 108, 124)


# --- ISO base media (mp4, mov, heic, avif) ------------------------------------------------------------------

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P "}
# Atoms an old QuickTime file (from before ftyp existed) may open with.
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


def _check_iso_media(head: bytes) -> DetectedMedia:
    major = head[8:12]
    box_size = struct.unpack_from(">I", head)[0]
    compatible = {head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)}
    if major in _AVIF_BRANDS or (major in _HEIF_BRANDS and compatible & _AVIF_BRANDS):
        raise UnsupportedMediaError("avif image")
    if major in _HEIF_BRANDS:
        raise UnsupportedMediaError("heic image")
    if major in _AUDIO_BRANDS:
        raise UnsupportedMediaError("m4a audio")
    if major == b"qt  ":
        return _media("video", "mov")
    return _media("video", "mp4")


# --- Matroska / WebM ----------------------------------------------------------------------------------------

_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_DOCTYPE_ID = 0x4282


def _ebml_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    """Read one EBML variable-length integer; element IDs keep their length marker, sizes drop it."""
    if pos >= len(data) or data[pos] == 0:
        raise ValueError("bad EBML variable-length integer")
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        raise ValueError("EBML integer runs past the head")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, pos + length


def _ebml_doctype(head: bytes) -> str | None:
    """The DocType string from the EBML header at the start of `head`, or None when it cannot be read."""
    try:
        _, pos = _ebml_vint(head, 0, keep_marker=True)
        header_size, pos = _ebml_vint(head, pos, keep_marker=False)
        end = min(pos + header_size, len(head))
        while pos < end:
            element_id, pos = _ebml_vint(head, pos, keep_marker=True)
            element_size, pos = _ebml_vint(head, pos, keep_marker=False)
            if element_id == _EBML_DOCTYPE_ID:
                return head[pos : pos + element_size].rstrip(b"\0").decode("ascii", "replace")
            pos += element_size
    except ValueError:
        return None
    return None


def _check_matroska(head: bytes) -> DetectedMedia:
    # The Matroska spec makes "matroska" the DocType when the element is missing.
    doctype = _ebml_doctype(head) or "matroska"
    if doctype == "webm":
        return _media("video", "webm")
    if doctype == "matroska":
        return _media("video", "mkv")
    raise UnsupportedMediaError(f"ebml file (doctype {doctype})")


# --- ZIP and OOXML ------------------------------------------------------------------------------------------

_ZIP_LOCAL_HEADER = b"PK\x03\x04"
_ZIP_LOCAL_HEADER_LEN = 30
_ZIP_HAS_DATA_DESCRIPTOR = 0x08
_ZIP_DEFLATED = 8
_CONTENT_TYPES_PART = "[Content_Types].xml"
# The main part's content type, as [Content_Types].xml declares it.
_OOXML_MAIN_TYPES = {
    b"wordprocessingml.document.main": "docx",
    b"wordprocessingml.template.main": "docx",
    b"spreadsheetml.sheet.main": "xlsx",
    b"spreadsheetml.template.main": "xlsx",
    b"ms-excel.sheet.macroEnabled.main": "xlsx",
    b"presentationml": "pptx",
}


def _zip_entries(head: bytes) -> list[tuple[str, bytes, int]]:
    """(name, the stored data seen in the head, compression method) of each local file entry in `head`."""
    entries = []
    pos = 0
    while head.startswith(_ZIP_LOCAL_HEADER, pos) and pos + _ZIP_LOCAL_HEADER_LEN <= len(head):
        flags, method = struct.unpack_from("<HH", head, pos + 6)
        compressed_size = struct.unpack_from("<I", head, pos + 18)[0]
        name_len, extra_len = struct.unpack_from("<HH", head, pos + 26)
        name_start = pos + _ZIP_LOCAL_HEADER_LEN
        if name_start + name_len > len(head):
            break
        name = head[name_start : name_start + name_len].decode("utf-8", "replace")
        data_start = name_start + name_len + extra_len
        if flags & _ZIP_HAS_DATA_DESCRIPTOR:
            # The size comes after the data, so the next entry can only be found by its signature.
            next_header = head.find(_ZIP_LOCAL_HEADER, data_start)
            data_end = next_header if next_header != -1 else len(head)
        else:
            data_end = data_start + compressed_size
        entries.append((name, head[data_start:data_end], method))
        pos = data_end
    return entries


def _inflate_partial(data: bytes, method: int) -> bytes:
    """As much of an entry's content as the head holds (a cut-off deflate stream still yields a prefix)."""
    if method != _ZIP_DEFLATED:
        return data
    try:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    except zlib.error:
        return b""


def _check_zip(head: bytes, hint: str | None) -> DetectedMedia:
    entries = _zip_entries(head)
    names = [name for name, _, _ in entries]
    if any(name.startswith("word/") for name in names):
        return _media("document", "docx")
    if any(name.startswith("xl/") for name in names):
        return _media("document", "xlsx")
    if any(name.startswith("ppt/") for name in names):
        raise UnsupportedMediaError("pptx presentation")
    if _CONTENT_TYPES_PART in names:
        # The parts may lie beyond the head (say, a big thumbnail first), but the content types list,
        # which producers write first, names the main part.
        data, method = next((d, m) for n, d, m in entries if n == _CONTENT_TYPES_PART)
        content_types = _inflate_partial(data, method)
        for marker, fmt in _OOXML_MAIN_TYPES.items():
            if marker in content_types:
                if fmt == "pptx":
                    raise UnsupportedMediaError("pptx presentation")
                return _media("document", fmt)
        if hint in ("docx", "xlsx"):
            return _media("document", hint)
    if names and names[0] == "mimetype":
        mimetype = entries[0][1].decode("ascii", "replace")
        if mimetype == "application/epub+zip":
            raise UnsupportedMediaError("epub book")
        if mimetype.startswith("application/vnd.oasis.opendocument"):
            raise UnsupportedMediaError("opendocument file")
    raise UnsupportedMediaError("zip archive (not docx/xlsx)")


# --- other binaries, named so the rejection says what was sent ---------------------------------------------

_PREFIX_SIGNATURES = [
    (b"\x1f\x8b", "gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "7z archive"),
    (b"Rar!\x1a\x07", "rar archive"),
    (b"BZh", "bzip2 archive"),
    (b"\xfd7zXZ\x00", "xz archive"),
    (b"\x28\xb5\x2f\xfd", "zstd archive"),
    (b"PK\x05\x06", "zip archive (not docx/xlsx)"),  # an empty zip: only the end-of-directory record
    (b"\x7fELF", "ELF executable"),
    (b"MZ", "PE/MZ executable"),
    (b"\xfe\xed\xfa\xce", "Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
    (b"\0asm", "webassembly module"),
    (b"SQLite format 3\0", "sqlite database"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy office document (doc/xls/ppt)"),
    (b"ID3", "mp3 audio"),
    (b"OggS", "ogg media"),
    (b"fLaC", "flac audio"),
    (b"II*\0", "tiff image"),
    (b"MM\0*", "tiff image"),
    (b"\0\0\x01\0", "ico image"),
    (b"8BPS", "photoshop image"),
    (b"\0\0\0\x0cjP  \r\n\x87\n", "jpeg 2000 image"),
    (b"\xff\xfe", "utf-16 text"),
    (b"\xfe\xff", "utf-16 text"),
]
_RIFF_FORMS = {b"WAVE": "wav audio", b"AVI ": "avi video"}


def _name_binary(head: bytes) -> str:
    """A short name for a binary the gateway does not take."""
    for magic, found in _PREFIX_SIGNATURES:
        if head.startswith(magic):
            return found
    if head.startswith(b"\xca\xfe\xba\xbe") and len(head) >= 8:
        # Shared by fat Mach-O (a small architecture count) and Java classes (a class-file version >= 45).
        return "Mach-O executable" if struct.unpack_from(">I", head, 4)[0] < 45 else "java class file"
    if head.startswith(b"RIFF") and len(head) >= 12:
        return _RIFF_FORMS.get(head[8:12], "riff file")
    if head[257:262] == b"ustar":
        return "tar archive"
    if _is_bmp(head):
        return "bmp image"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync: layer bits 00 mark AAC in ADTS framing, anything else MPEG layer I-III.
        return "aac audio" if head[1] & 0x06 == 0 else "mp3 audio"
    return "unknown binary"


# --- text ---------------------------------------------------------------------------------------------------

_UTF8_BOM = b"\xef\xbb\xbf"
_ALLOWED_CONTROLS = {"\t", "\n", "\r", "\f"}
_TEXT_FORMATS = {"txt", "md", "json", "html", "xml", "yaml"}
_CSV_SNIFF_LINES = 5


def _decode_utf8(head: bytes, whole: bool) -> str | None:
    """The text, or None when not UTF-8 (a character cut by the end of a partial head is fine)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return decoder.decode(head.removeprefix(_UTF8_BOM), final=whole)
    except UnicodeDecodeError:
        return None


def _has_control_chars(text: str) -> bool:
    return any((ord(char) < 0x20 or ord(char) == 0x7F) and char not in _ALLOWED_CONTROLS for char in text)


def _looks_like_csv(text: str, whole: bool) -> bool:
    """At least two lines that split into the same number (two or more) of comma-separated fields."""
    lines = text.splitlines()
    if not whole and lines:
        lines = lines[:-1]  # the last line may be cut
    lines = [line for line in lines[:_CSV_SNIFF_LINES] if line.strip()]
    if len(lines) < 2:
        return False
    try:
        field_counts = {len(row) for row in csv.reader(lines)}
    except csv.Error:
        return False
    return len(field_counts) == 1 and field_counts.pop() >= 2


def _sniff_text_format(text: str) -> str:
    stripped = text.lstrip()
    lowered = stripped[:64].lower()
    if stripped[:1] in ("{", "["):
        try:
            json.loads(stripped)
        except ValueError:
            pass
        else:
            return "json"
    if lowered.startswith("<?xml"):
        return "xml"
    if lowered.startswith(("<!doctype html", "<html")):
        return "html"
    return "txt"


def _check_text(text: str, whole: bool, hint: str | None) -> DetectedMedia:
    if hint == "csv":
        return _media("document", "csv")
    if hint in _TEXT_FORMATS:
        return _media("text", hint)
    if _looks_like_csv(text, whole):
        return _media("document", "csv")
    return _media("text", _sniff_text_format(text))


def _looks_like_text(head: bytes) -> bool:
    """No NUL or stray control bytes: text in some encoding, even if not UTF-8."""
    return not any((byte < 0x20 or byte == 0x7F) and chr(byte) not in _ALLOWED_CONTROLS for byte in head)


# --- entry point --------------------------------------------------------------------------------------------


def detect(
    head: bytes, *, name: str | None = None, content_type: str | None = None, size: int | None = None
) -> DetectedMedia:
    """What the item starting with `head` (its first HEAD_BYTES) is; raises UnsupportedMediaError otherwise.

    `size` is the item's full size: it tells whether `head` is the whole item, which a few checks need.
    """
    if size == 0 or not head:
        raise UnsupportedMediaError("empty file")
    whole = size is not None and size <= len(head)
    hint = _hint(name, content_type)

    if head.startswith(_PNG_SIGNATURE):
        return _check_png(head, whole, size)
    if head.startswith(b"\xff\xd8\xff"):
        return _media("image", "jpeg")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return _media("image", "gif")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _media("image", "webp")
    if head[4:8] == b"ftyp" and len(head) >= 12:
        return _check_iso_media(head)
    if head.startswith(_EBML_MAGIC):
        return _check_matroska(head)
    if head.startswith(b"%PDF-"):
        return _media("document", "pdf")
    if head.startswith(_ZIP_LOCAL_HEADER):
        return _check_zip(head, hint)
    if head[:1] == b"\0" and head[4:8] in _QUICKTIME_ATOMS:
        # Pre-ftyp QuickTime (the leading NUL is the atom size's high byte, which no text has). An MP4
        # rarely opens without ftyp, so only an explicit hint says otherwise.
        return _media("video", "mp4" if hint == "mp4" else "mov")

    # Text before the named binaries: some of their signatures ("MZ", "ID3", "BZh") can also start a line
    # of text, but the binaries themselves never decode as control-free UTF-8.
    text = _decode_utf8(head, whole)
    if text is not None and not _has_control_chars(text):
        return _check_text(text, whole, hint)
    found = _name_binary(head)
    if found == "unknown binary" and text is None and _looks_like_text(head):
        found = "non-utf-8 text"
    elif found == "unknown binary" and text is not None and b"\0" not in head:
        found = "text with control characters"
    raise UnsupportedMediaError(found)
