"""Media detection by magic bytes, and document names the gateway accepts.

Every detection here sees only the first HEAD_BYTES of an item plus its size, as the callers do.
"""

import io
import random
import re
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.media import (
    HEAD_BYTES,
    DetectedMedia,
    UnsupportedMediaError,
    detect,
)
from shared.models import sanitize_document_name
from tests.sample_files import SAMPLE_KINDS

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TEST_DATA = Path(__file__).resolve().parent / "data"


def detect_file(path: Path, *, name: str | None = None, content_type: str | None = None) -> DetectedMedia:
    """Detect as a caller does: a ranged read of the head, the size from the object's metadata."""
    with path.open("rb") as file:
        head = file.read(HEAD_BYTES)
    name = path.name if name is None else name
    return detect(head, name=name, content_type=content_type, size=path.stat().st_size)


def detect_bytes(data: bytes, **hints: str) -> DetectedMedia:
    return detect(data[:HEAD_BYTES], size=len(data), **hints)


def rejection(data: bytes, **hints: str) -> str:
    with pytest.raises(UnsupportedMediaError) as caught:
        detect_bytes(data, **hints)
    return caught.value.detected


# --- every committed file -----------------------------------------------------------------------------------

SAMPLE_EXPECTATIONS = SAMPLE_KINDS
ACCEPTED_FIXTURES = {
    "clip.mov": ("video", "mov"),
    "clip.mkv": ("video", "mkv"),
    "clip.webm": ("video", "webm"),
    "page.html": ("text", "html"),
    "feed.xml": ("text", "xml"),
    "settings.yaml": ("text", "yaml"),
}
REJECTED_FIXTURES = {
    "truncated.png": "truncated png",
    "unknown.bin": "unknown binary",
    "empty.txt": "empty file",
    "archive.zip": "zip archive (not docx/xlsx)",
    "notes.txt.gz": "gzip archive",
    "archive.tar": "tar archive",
    "program.elf": "ELF executable",
    "slides.pptx": "pptx presentation",
    "store.sqlite": "sqlite database",
    "tone.wav": "wav audio",
    "tone.mp3": "mp3 audio",
    "image.bmp": "bmp image",
    "image.tiff": "tiff image",
    "image.avif": "avif image",
}
# Without a name only the bytes speak: markdown and yaml read as plain text, the rest as before.
CONTENT_ONLY_DIFFERENCES = {"readme.md": ("text", "txt"), "settings.yaml": ("text", "txt")}
LABELS = {"image": "Image", "video": "Video", "document": "Document", "text": "Text"}


def test_every_committed_file_has_an_expectation():
    assert {p.name for p in SAMPLES.iterdir()} - {"README.md"} == set(SAMPLE_EXPECTATIONS)
    # fake_* are the embedded AWS tests' own fixtures, not media.
    media_fixtures = {p.name for p in TEST_DATA.iterdir() if not p.name.startswith("fake_")}
    assert media_fixtures == set(ACCEPTED_FIXTURES) | set(REJECTED_FIXTURES)


def test_samples_stay_small():
    assert sum(p.stat().st_size for p in SAMPLES.iterdir()) < 1_000_000


@pytest.mark.parametrize(
    ("path", "expected"),
    [(SAMPLES / n, e) for n, e in SAMPLE_EXPECTATIONS.items()]
    + [(TEST_DATA / n, e) for n, e in ACCEPTED_FIXTURES.items()],
    ids=lambda value: value.name if isinstance(value, Path) else None,
)
def test_committed_file_is_detected(path, expected):
    kind, fmt = expected
    assert detect_file(path) == DetectedMedia(kind=kind, format=fmt, label=LABELS[kind])


@pytest.mark.parametrize(
    "path",
    [SAMPLES / n for n in SAMPLE_EXPECTATIONS] + [TEST_DATA / n for n in ACCEPTED_FIXTURES],
    ids=lambda path: path.name,
)
def test_committed_file_is_detected_from_its_bytes_alone(path):
    expected = (
        CONTENT_ONLY_DIFFERENCES.get(path.name) or {**SAMPLE_EXPECTATIONS, **ACCEPTED_FIXTURES}[path.name]
    )
    detected = detect_file(path, name="")
    assert (detected.kind, detected.format) == expected


@pytest.mark.parametrize(("file_name", "detected"), REJECTED_FIXTURES.items())
def test_rejected_fixture_names_what_it_is(file_name, detected):
    with pytest.raises(UnsupportedMediaError) as caught:
        detect_file(TEST_DATA / file_name)
    assert caught.value.detected == detected
    message = str(caught.value)
    assert message.startswith(f"unsupported file type: {detected} (supported: ")
    assert "png, jpeg, gif, webp images" in message
    assert "pdf, csv, docx, xlsx documents" in message


def test_unsupported_media_is_a_permanent_pipeline_error():
    from shared.errors import PipelineError

    error = UnsupportedMediaError("gzip archive")
    assert isinstance(error, PipelineError) and not error.retryable
    assert error.kind == "UnsupportedMediaError"


# --- hints only where the bytes leave a choice --------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "name", "content_type", "expected_format"),
    [
        ("diagram.png", "diagram.jpg", None, "png"),
        ("diagram.png", "data.csv", "text/csv", "png"),
        ("photo.jpg", "photo.png", "image/png", "jpeg"),
        ("report.pdf", "report.docx", None, "pdf"),
        ("letter.docx", "letter.xlsx", None, "docx"),
        ("budget.xlsx", "budget.docx", None, "xlsx"),
        ("clip.mp4", "clip.mov", "video/quicktime", "mp4"),
    ],
)
def test_bytes_outrank_the_hints(sample, name, content_type, expected_format):
    assert detect_file(SAMPLES / sample, name=name, content_type=content_type).format == expected_format


def test_csv_or_text_follows_the_hint():
    sales = (SAMPLES / "sales.csv").read_bytes()
    notes = (SAMPLES / "notes.txt").read_bytes()
    assert detect_bytes(sales, name="sales.txt") == DetectedMedia("text", "txt", "Text")
    assert detect_bytes(sales, name="sales.csv") == DetectedMedia("document", "csv", "Document")
    assert detect_bytes(sales, content_type="text/plain") == DetectedMedia("text", "txt", "Text")
    assert detect_bytes(notes, name="notes.csv") == DetectedMedia("document", "csv", "Document")
    assert detect_bytes(notes, content_type="text/csv; charset=utf-8").format == "csv"


def test_the_extension_outranks_the_content_type():
    notes = (SAMPLES / "notes.txt").read_bytes()
    assert detect_bytes(notes, name="notes.md", content_type="text/plain").format == "md"
    assert detect_bytes(notes, name="notes.log", content_type="text/markdown").format == "md"
    assert detect_bytes(notes, name="NOTES.YML").format == "yaml"
    assert detect_bytes(notes, name="dir.v2/notes", content_type="application/x-yaml").format == "yaml"
    config = (SAMPLES / "config.json").read_bytes()
    assert detect_bytes(config, name="config.json.txt").format == "txt"


@pytest.mark.parametrize(
    ("text", "expected_format"),
    [
        ('  {"a": [1, 2]}\n', "json"),
        ("[1, 2, 3]", "json"),
        ("{not json at all}", "txt"),
        ('<?xml version="1.0"?><a/>', "xml"),
        ("<!DOCTYPE html><html></html>", "html"),
        ("\n<HTML><body>hi</body></HTML>", "html"),
        ("a,b,c\n1,2,3\n4,5,6\n", "csv"),
        ('name,quote\nAda,"Hello, world"\nBob,"x"\n', "csv"),
        ("a,b,c\n1,2\n", "txt"),
        ("just one line, with a comma\n", "txt"),
        ("plain words\nand more words\n", "txt"),
    ],
)
def test_text_format_sniffed_when_there_is_no_hint(text, expected_format):
    assert detect_bytes(text.encode()).format == expected_format


def test_text_allows_a_bom_and_a_character_cut_by_the_head():
    assert detect_bytes(b"\xef\xbb\xbfhello\n").format == "txt"
    long_text = ("a" + "é" * HEAD_BYTES).encode()
    assert long_text[HEAD_BYTES - 1 : HEAD_BYTES + 1] == "é".encode()  # the head ends inside a character
    assert detect_bytes(long_text, name="long.txt").format == "txt"
    assert detect(long_text[:HEAD_BYTES]).format == "txt"  # size unknown: the head may be partial


def test_text_cut_mid_character_at_its_real_end_is_not_utf8():
    assert rejection("café".encode()[:-1]) == "non-utf-8 text"


# --- rejections built in memory -----------------------------------------------------------------------------


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    brands = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(brands)) + b"ftyp" + brands + bytes(64)


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(32), "7z archive"),
        (b"Rar!\x1a\x07\x01\x00" + bytes(32), "rar archive"),
        (b"BZh91AY&SY\x00\x01\xff", "bzip2 archive"),
        (b"\xfd7zXZ\x00\x00\x04", "xz archive"),
        (b"PK\x05\x06" + bytes(18), "zip archive (not docx/xlsx)"),
        (b"MZ\x90\x00\x03\x00\x00\x00", "PE/MZ executable"),
        (b"\xcf\xfa\xed\xfe\x07\x00\x00\x01", "Mach-O executable"),
        (b"\xca\xfe\xba\xbe\x00\x00\x00\x02", "Mach-O executable"),
        (b"\xca\xfe\xba\xbe\x00\x00\x00\x41", "java class file"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x23", "mp3 audio"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "aac audio"),
        (b"OggS\x00\x02" + bytes(20), "ogg media"),
        (b"fLaC\x00\x00\x00\x22", "flac audio"),
        (b"RIFF\x24\x00\x00\x00AVI LIST", "avi video"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(8), "legacy office document (doc/xls/ppt)"),
        (ftyp(b"heic", b"mif1", b"heic"), "heic image"),
        (ftyp(b"mif1", b"mif1", b"avif"), "avif image"),
        (ftyp(b"M4A ", b"M4A ", b"isom"), "m4a audio"),
        ("hello".encode("utf-16"), "utf-16 text"),
        ("déjà vu, naïve café\n".encode("latin-1"), "non-utf-8 text"),
        (b"colour: \x1b[31mred\x1b[0m\n", "text with control characters"),
        (b"\x00\x01\x02\x03\x04", "unknown binary"),
    ],
)
def test_rejection_names_what_was_found(data, detected):
    assert rejection(data) == detected


def test_empty_item_is_rejected_by_size_or_head():
    assert rejection(b"") == "empty file"
    with pytest.raises(UnsupportedMediaError, match="empty file"):
        detect(b"", size=None)
    with pytest.raises(UnsupportedMediaError, match="empty file"):
        detect(b"anything", size=0)


def test_text_that_starts_like_a_binary_signature_is_still_text():
    assert detect_bytes(b"MZ-1 service notes\n").format == "txt"
    assert detect_bytes(b"ID3,name\n1,a\n2,b\n").format == "csv"
    assert detect_bytes(b"The free tier covers small files.\n").format == "txt"


# --- images -------------------------------------------------------------------------------------------------


def test_png_truncation_is_caught_by_head_or_size():
    png = (SAMPLES / "diagram.png").read_bytes()
    assert rejection(png[:20]) == "truncated png"
    assert rejection(png[:32]) == "truncated png"  # the IHDR chunk's CRC is missing
    with pytest.raises(UnsupportedMediaError, match="truncated png"):
        detect(png, size=60)  # smaller than any complete PNG
    assert rejection(png[:-12]) == "truncated png"  # whole file in hand, no IEND chunk
    assert rejection(png[:12] + b"IDAT" + png[16:]) == "corrupt png"


def test_png_head_of_a_larger_item_is_not_judged_by_its_end():
    big_png = (SAMPLES / "diagram.png").read_bytes()[:-12] + bytes(HEAD_BYTES)
    assert detect(big_png[:HEAD_BYTES], size=len(big_png)).format == "png"
    assert detect(big_png[:HEAD_BYTES]).format == "png"


# --- video containers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("brand", [b"isom", b"mp41", b"mp42", b"avc1", b"M4V ", b"dash", b"iso5", b"3gp5"])
def test_iso_media_brands_other_than_quicktime_are_mp4(brand):
    assert detect_bytes(ftyp(brand, b"isom")) == DetectedMedia("video", "mp4", "Video")


def test_quicktime_brand_is_mov():
    assert detect_bytes(ftyp(b"qt  ", b"qt  ")).format == "mov"


def test_quicktime_without_ftyp_is_mov_unless_named_mp4():
    old_quicktime = struct.pack(">I", 0x6C) + b"moov" + bytes(0x64)
    assert detect_bytes(old_quicktime).format == "mov"
    assert detect_bytes(old_quicktime, name="clip.mp4").format == "mp4"


def ebml_header(doctype: bytes | None) -> bytes:
    children = b"\x42\x86\x81\x01"  # EBMLVersion 1
    if doctype is not None:
        children += b"\x42\x82" + bytes([0x80 | len(doctype)]) + doctype
    children += b"\x42\x87\x81\x04"  # DocTypeVersion 4
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(children)]) + children + b"\x18\x53\x80\x67" + bytes(16)


def test_matroska_doctype_decides_webm_or_mkv():
    assert detect_bytes(ebml_header(b"webm")).format == "webm"
    assert detect_bytes(ebml_header(b"matroska")).format == "mkv"
    assert detect_bytes(ebml_header(None)).format == "mkv"  # the spec's default DocType
    assert rejection(ebml_header(b"dvd")) == "ebml file (doctype dvd)"


# --- OOXML --------------------------------------------------------------------------------------------------

GENERIC_CONTENT_TYPES = (
    '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="xml" ContentType="application/xml"/></Types>'
)
DOCX_CONTENT_TYPES = GENERIC_CONTENT_TYPES.replace(
    "</Types>",
    '<Override PartName="/word/document.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>',
)


def package_with_parts_beyond_the_head(content_types: str | None, main_part: str) -> bytes:
    """A zip whose first entries fill the head, so the main part's name lies beyond it."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as package:
        if content_types is not None:
            package.writestr("[Content_Types].xml", content_types, compress_type=zipfile.ZIP_DEFLATED)
        filler = random.Random(7).randbytes(HEAD_BYTES)
        package.writestr("docProps/thumbnail.jpeg", filler, compress_type=zipfile.ZIP_STORED)
        package.writestr(main_part, "<document/>")
    return out.getvalue()


def test_ooxml_main_part_beyond_the_head_is_read_from_the_content_types():
    package = package_with_parts_beyond_the_head(DOCX_CONTENT_TYPES, "word/document.xml")
    assert detect_bytes(package).format == "docx"


def test_ooxml_falls_back_to_the_hint_only_when_the_bytes_say_nothing():
    package = package_with_parts_beyond_the_head(GENERIC_CONTENT_TYPES, "xl/workbook.xml")
    assert detect_bytes(package, name="budget.xlsx").format == "xlsx"
    xlsx_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert detect_bytes(package, content_type=xlsx_type).format == "xlsx"
    assert rejection(package) == "zip archive (not docx/xlsx)"
    assert rejection(package, name="budget.zip") == "zip archive (not docx/xlsx)"


def test_plain_zip_named_docx_is_still_a_zip():
    not_ooxml = package_with_parts_beyond_the_head(None, "word/document.xml")
    assert rejection(not_ooxml, name="letter.docx") == "zip archive (not docx/xlsx)"
    assert rejection((TEST_DATA / "archive.zip").read_bytes(), name="letter.docx") == (
        "zip archive (not docx/xlsx)"
    )


def test_content_types_alone_is_not_enough():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as package:
        package.writestr("[Content_Types].xml", GENERIC_CONTENT_TYPES)
        package.writestr("notes.txt", "hello")
    assert rejection(out.getvalue()) == "zip archive (not docx/xlsx)"


def test_opendocument_and_epub_are_named():
    for mimetype, detected in [
        ("application/vnd.oasis.opendocument.text", "opendocument file"),
        ("application/epub+zip", "epub book"),
    ]:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as package:
            package.writestr("mimetype", mimetype)
            package.writestr("content.xml", "<x/>", compress_type=zipfile.ZIP_DEFLATED)
        assert rejection(out.getvalue()) == detected


# --- robustness ---------------------------------------------------------------------------------------------

SIGNATURES = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"PK\x03\x04",
    b"\x1a\x45\xdf\xa3",
    b"\0\0\0\x18ftyp",
    b"RIFF\0\0\0\0",
    b"BM",
    b"\xca\xfe\xba\xbe",
    b"\xff",
]


@given(
    prefix=st.sampled_from(SIGNATURES), rest=st.binary(max_size=200), size=st.none() | st.integers(0, 10**9)
)
def test_detect_either_answers_or_raises_unsupported(prefix, rest, size):
    try:
        detected = detect(prefix + rest, name="file", size=size)
    except UnsupportedMediaError as error:
        assert error.detected
    else:
        assert detected.label == LABELS[detected.kind]


# --- document names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Quarterly report.pdf", "Quarterly report"),
        ("my_file (v2) [final].docx", "my-file (v2) [final]"),
        ("a  b\t\tc.txt", "a b c"),
        ("Résumé \u2013 été.pdf", "Resume ete"),  # an en dash: non-ASCII, so dropped
        ("ﬁnance.xlsx", "finance"),
        ("報告.pdf", "document"),
        ("", "document"),
        ("---.csv", "document"),
        ("uploads/2024/report.v2.csv", "report-v2"),
        ("C:\\Users\\sam\\budget.xlsx", "budget"),
        (".env", "env"),
        ("no extension", "no extension"),
        ("  padded  .pdf", "padded"),
        ("sales__2024...final!!.csv", "sales-2024-final"),
    ],
)
def test_sanitize_document_name(name, expected):
    assert sanitize_document_name(name) == expected


def test_sanitize_document_name_caps_the_length_without_a_trailing_separator():
    assert sanitize_document_name("x" * 300 + ".pdf") == "x" * 100
    cut_at_space = sanitize_document_name("a" * 99 + " b.pdf")
    assert cut_at_space == "a" * 99


ALLOWED_NAME = re.compile(r"[A-Za-z0-9()\[\]\- ]+")


@given(st.text())
def test_sanitized_names_are_always_acceptable(name):
    cleaned = sanitize_document_name(name)
    assert ALLOWED_NAME.fullmatch(cleaned)
    assert "  " not in cleaned
    assert cleaned == cleaned.strip()
    assert 0 < len(cleaned) <= 100
