"""(Re)create samples/ and the detection fixtures in tests/data/, deterministically, with real tools.

Run from the repository root: `python -m devtools.make_samples` (with the project's .venv python).

Needs: Pillow (with WebP and AVIF support, as in its wheels), fpdf2, python-docx and openpyxl, all in
requirements-dev.txt; and for the videos and the mp3 an `ffmpeg` on PATH built with libx264, libvpx and
libmp3lame (Debian's: `apt-get install ffmpeg`). Without ffmpeg pass --skip-ffmpeg to keep the committed
video and audio files. The outputs are committed, so neither the tests nor CI run this script.

Same tool versions, same bytes: fixed dates go into every format's metadata and zip entries, ffmpeg runs
single-threaded in bit-exact mode, and random bytes come from a fixed seed.

tests/data/ holds what only the media detection tests need: other containers (mov, mkv, webm), more text
formats (html, xml, yaml), and files the gateway does not take, each a small real one of its kind where a
standard tool makes it (gzip, zip, tar, sqlite, wav, mp3, bmp, tiff, avif) and otherwise a minimal
hand-built one (an ELF header, a pptx-shaped package), plus a truncated PNG, random bytes and an empty file.
"""

import argparse
import datetime
import gzip
import io
import json
import math
import random
import re
import shutil
import sqlite3
import struct
import subprocess
import tarfile
import wave
import zipfile
from pathlib import Path

import docx
import openpyxl
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TEST_DATA = ROOT / "tests" / "data"

FIXED_DATE = datetime.datetime(2024, 1, 15, 9, 30, tzinfo=datetime.UTC)
FIXED_ZIP_TIME = (2024, 1, 15, 9, 30, 0)
RANDOM_SEED = 20240115


# --- images -------------------------------------------------------------------------------------------------


def make_photo(path: Path) -> None:
    """A small landscape: sky gradient, sun, hills and a house, saved as a plain JPEG without EXIF."""
    image = Image.new("RGB", (320, 240))
    draw = ImageDraw.Draw(image)
    for y in range(240):
        draw.line([(0, y), (319, y)], fill=(90 + y // 3, 150 + y // 4, 235))
    draw.ellipse([240, 25, 290, 75], fill=(255, 214, 80))
    draw.polygon([(0, 170), (90, 120), (200, 165), (320, 130), (320, 240), (0, 240)], fill=(70, 140, 60))
    draw.rectangle([110, 150, 180, 205], fill=(190, 70, 50))
    draw.polygon([(100, 152), (145, 115), (190, 152)], fill=(110, 50, 40))
    draw.rectangle([137, 178, 153, 205], fill=(80, 50, 30))
    image.save(path, "JPEG", quality=75, optimize=True)


def make_diagram(path: Path) -> None:
    """A box-and-arrow sketch of the pipeline, as a palette PNG."""
    image = Image.new("RGB", (480, 200), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    boxes = [("S3 upload", 20), ("Step Functions", 180), ("AI gateway", 340)]
    for label, left in boxes:
        draw.rounded_rectangle([left, 70, left + 120, 130], radius=10, outline=(30, 60, 120), width=3)
        draw.text((left + 60, 100), label, fill=(20, 20, 20), font=font, anchor="mm")
    for start in (140, 300):
        draw.line([(start + 2, 100), (start + 38, 100)], fill=(30, 60, 120), width=3)
        draw.polygon([(start + 38, 92), (start + 38, 108), (start + 40 + 8, 100)], fill=(30, 60, 120))
    draw.text((240, 30), "Quant AI pipeline", fill=(0, 0, 0), font=font, anchor="mm")
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path, "PNG", optimize=True)


def make_animation(path: Path) -> None:
    """Three frames of a ball crossing the picture, looping."""
    frames = []
    for step in range(3):
        frame = Image.new("RGB", (120, 90), (240, 240, 250))
        draw = ImageDraw.Draw(frame)
        x = 15 + step * 35
        draw.ellipse([x, 30, x + 30, 60], fill=(220, 40, 60))
        frames.append(frame.convert("P", palette=Image.Palette.ADAPTIVE, colors=8))
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=300, loop=0)


def make_sticker(path: Path) -> None:
    """A smiling face on a transparent background, as lossy WebP with alpha."""
    image = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse([10, 10, 150, 150], fill=(255, 200, 40, 255), outline=(120, 80, 0, 255), width=4)
    draw.ellipse([50, 50, 66, 70], fill=(40, 30, 20, 255))
    draw.ellipse([94, 50, 110, 70], fill=(40, 30, 20, 255))
    draw.arc([45, 60, 115, 120], start=20, end=160, fill=(40, 30, 20, 255), width=5)
    image.save(path, "WEBP", quality=80, method=6)


# --- documents ----------------------------------------------------------------------------------------------

REPORT_PARAGRAPHS = [
    "This quarterly report summarises unit sales and revenue across the four sales regions. "
    "Figures are in Australian dollars and exclude GST.",
    "The northern region grew fastest, driven by the new distribution agreement signed in February. "
    "The southern region held steady, while the eastern and western regions dipped slightly in March.",
    "Operating costs were in line with the budget. Marketing spend was brought forward to support the "
    "product launch, which explains the higher figure for the first quarter.",
]


def make_report(path: Path) -> None:
    """Two pages of text; a fixed creation date also fixes the PDF's file identifier."""
    pdf = FPDF()
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title("Quarterly report")
    pdf.set_author("Samples generator")
    pdf.set_font("Helvetica", size=12)
    for page in (1, 2):
        pdf.add_page()
        pdf.set_font("Helvetica", style="B", size=16)
        pdf.cell(0, 10, f"Quarterly report - part {page}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=12)
        for paragraph in REPORT_PARAGRAPHS:
            pdf.multi_cell(0, 7, paragraph, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
    pdf.output(str(path))


SALES_ROWS = [
    ("region", "month", "units", "revenue"),
    ("North", "2024-01", "120", "14400.00"),
    ("North", "2024-02", "135", "16200.00"),
    ("North", "2024-03", "150", "18000.00"),
    ("South", "2024-01", "98", "11760.00"),
    ("South", "2024-02", "101", "12120.00"),
    ("South", "2024-03", "99", "11880.00"),
    ("East", "2024-01", "87", "10440.00"),
    ("East", "2024-02", "90", "10800.00"),
    ("East", "2024-03", "84", "10080.00"),
    ("West", "2024-01", "110", "13200.00"),
    ("West", "2024-02", "108", "12960.00"),
    ("West", "2024-03", "103", "12360.00"),
]


def make_sales(path: Path) -> None:
    path.write_text("".join(",".join(row) + "\n" for row in SALES_ROWS), encoding="utf-8")


def make_letter(path: Path) -> None:
    """A short business letter with a table, then its zip rewritten with fixed entry times."""
    document = docx.Document()
    properties = document.core_properties
    properties.author = "Samples generator"
    properties.title = "Letter to a supplier"
    properties.created = properties.modified = properties.last_printed = FIXED_DATE.replace(tzinfo=None)
    properties.revision = 1
    document.add_heading("Order confirmation", level=1)
    document.add_paragraph("Dear Ms Nguyen,")
    document.add_paragraph(
        "Thank you for your quote of 10 January. We are pleased to confirm the order below, "
        "for delivery to our Melbourne warehouse by the end of February."
    )
    table = document.add_table(rows=1, cols=3)
    table.style = "Table Grid"
    for cell, text in zip(table.rows[0].cells, ("Item", "Quantity", "Unit price"), strict=True):
        cell.text = text
    for item in (("Shipping cartons", "500", "$1.20"), ("Packing tape", "48", "$3.50")):
        for cell, text in zip(table.add_row().cells, item, strict=True):
            cell.text = text
    document.add_paragraph("Kind regards,")
    document.add_paragraph("Sam Taylor, Purchasing")
    buffer = io.BytesIO()
    document.save(buffer)
    path.write_bytes(normalise_zip(buffer.getvalue()))


BUDGET_LINES = [
    ("Salaries", 42000, 43500),
    ("Rent", 6000, 6000),
    ("Marketing", 3500, 5200),
    ("Travel", 1800, 1250),
    ("Software", 2200, 2350),
]


def make_budget(path: Path) -> None:
    """A budget sheet with plain numbers: openpyxl stores no cached formula results, so totals are values."""
    workbook = openpyxl.Workbook()
    workbook.properties.creator = "Samples generator"
    workbook.properties.created = FIXED_DATE.replace(tzinfo=None)
    sheet = workbook.active
    sheet.title = "Budget 2024"
    sheet.append(["Category", "Budget (AUD)", "Actual (AUD)", "Variance (AUD)"])
    for category, budget, actual in BUDGET_LINES:
        sheet.append([category, budget, actual, actual - budget])
    total_budget = sum(line[1] for line in BUDGET_LINES)
    total_actual = sum(line[2] for line in BUDGET_LINES)
    sheet.append(["Total", total_budget, total_actual, total_actual - total_budget])
    buffer = io.BytesIO()
    workbook.save(buffer)
    path.write_bytes(normalise_zip(buffer.getvalue()))


def normalise_zip(data: bytes) -> bytes:
    """The same zip with fixed entry times and a fixed modified date in docProps/core.xml.

    python-docx and openpyxl stamp entries (and openpyxl the core properties) with the current time.
    """
    fixed_iso = FIXED_DATE.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for entry in source.infolist():
            content = source.read(entry)
            if entry.filename == "docProps/core.xml":
                content = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*(<)", rb"\g<1>" + fixed_iso + rb"\2", content
                )
            info = zipfile.ZipInfo(entry.filename, date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, content)
    return out.getvalue()


# --- text ---------------------------------------------------------------------------------------------------

NOTES = """Meeting notes - 15 January 2024

Attendees: Sam, Priya, Jordan

1. The upload bucket now triggers the pipeline for every new object.
2. Priya will check the gateway's limits for large videos (25 MB per item).
3. Next meeting: 22 January, same time.
"""

README = """# Sample project

A tiny markdown file for the pipeline to summarise.

## Steps

- Upload a file to the bucket.
- Wait for the result in `results/`.

> Media goes before the prompt, as the gateway advises.
"""

CONFIG = {
    "modelId": "amazon.nova-lite-v1:0",
    "temperature": 0.2,
    "maxTokens": 512,
    "prompt": "Describe this file in two sentences.",
}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Opening hours</title></head>
<body>
<h1>Opening hours</h1>
<p>Monday to Friday, 9 am to 5 pm. Closed on public holidays.</p>
</body>
</html>
"""

FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0">
  <channel>
    <title>Release notes</title>
    <item><title>Version 1.2</title><description>Faster uploads.</description></item>
  </channel>
</rss>
"""

SETTINGS = """# Pipeline settings
model: amazon.nova-lite-v1:0
max_tokens: 512
formats:
  - png
  - pdf
"""


def write_text_samples() -> None:
    (SAMPLES / "notes.txt").write_text(NOTES, encoding="utf-8")
    (SAMPLES / "readme.md").write_text(README, encoding="utf-8")
    (SAMPLES / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n", encoding="utf-8")
    (TEST_DATA / "page.html").write_text(PAGE, encoding="utf-8")
    (TEST_DATA / "feed.xml").write_text(FEED, encoding="utf-8")
    (TEST_DATA / "settings.yaml").write_text(SETTINGS, encoding="utf-8")


# --- video and audio (ffmpeg) -------------------------------------------------------------------------------

# Single-threaded and bit-exact so the same ffmpeg build writes the same bytes; no metadata carried over.
FFMPEG_DETERMINISM = ["-threads", "1", "-fflags", "+bitexact", "-flags", "+bitexact", "-map_metadata", "-1"]
TEST_PATTERN = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1.5"]
H264 = ["-c:v", "libx264", "-preset", "veryslow", "-crf", "32", "-pix_fmt", "yuv420p"]


def run_ffmpeg(arguments: list[str], path: Path) -> None:
    quiet = ["-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run(["ffmpeg", *quiet, *arguments, *FFMPEG_DETERMINISM, str(path)], check=True)


def make_videos_and_audio() -> None:
    run_ffmpeg([*TEST_PATTERN, *H264, "-movflags", "+faststart"], SAMPLES / "clip.mp4")
    run_ffmpeg([*TEST_PATTERN, *H264, "-f", "mov"], TEST_DATA / "clip.mov")
    run_ffmpeg([*TEST_PATTERN, *H264, "-f", "matroska"], TEST_DATA / "clip.mkv")
    vp9 = ["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "45", "-deadline", "good", "-cpu-used", "4"]
    run_ffmpeg([*TEST_PATTERN, *vp9, "-f", "webm"], TEST_DATA / "clip.webm")
    # No ID3 tag, so the file opens with a bare MPEG audio frame header.
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=0.3", "-c:a", "libmp3lame", "-b:a", "32k"]
    run_ffmpeg([*tone, "-id3v2_version", "0", "-write_xing", "0"], TEST_DATA / "tone.mp3")


# --- fixtures of kinds the gateway does not take ------------------------------------------------------------


def make_rejected_fixtures() -> None:
    rng = random.Random(RANDOM_SEED)

    diagram = (SAMPLES / "diagram.png").read_bytes()
    (TEST_DATA / "truncated.png").write_bytes(diagram[:400])
    # A leading NUL keeps the random bytes from posing as any signature or as text.
    (TEST_DATA / "unknown.bin").write_bytes(b"\0" + rng.randbytes(1023))
    (TEST_DATA / "empty.txt").write_bytes(b"")

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, text in (("notes.txt", NOTES), ("settings.yaml", SETTINGS)):
            zipped.writestr(zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME), text)
    (TEST_DATA / "archive.zip").write_bytes(archive.getvalue())

    (TEST_DATA / "notes.txt.gz").write_bytes(gzip.compress(NOTES.encode(), mtime=0))

    tarred = io.BytesIO()
    with tarfile.open(fileobj=tarred, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        member = tarfile.TarInfo("notes.txt")
        member.size = len(NOTES.encode())
        member.mtime = int(FIXED_DATE.timestamp())
        tar.addfile(member, io.BytesIO(NOTES.encode()))
    (TEST_DATA / "archive.tar").write_bytes(tarred.getvalue())

    (TEST_DATA / "program.elf").write_bytes(elf_header())
    (TEST_DATA / "slides.pptx").write_bytes(minimal_pptx())
    make_database(TEST_DATA / "store.sqlite")
    make_wav(TEST_DATA / "tone.wav")

    small = Image.new("RGB", (16, 16), (30, 120, 200))
    small.save(TEST_DATA / "image.bmp", "BMP")
    small.save(TEST_DATA / "image.tiff", "TIFF")
    small.save(TEST_DATA / "image.avif", "AVIF", quality=50)


def elf_header() -> bytes:
    """The 64-byte header of an x86-64 Linux executable with no program: enough to be recognised as ELF."""
    identity = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, version 1, System V
    fields = struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x401000, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    return identity + fields


def minimal_pptx() -> bytes:
    """An OOXML package whose main part is a presentation (python-pptx is not a project dependency)."""
    content_types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Override PartName="/ppt/presentation.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.presentationml.presentation.main+xml"/></Types>'
    )
    presentation = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<p:presentation xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"/>'
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr(zipfile.ZipInfo("[Content_Types].xml", date_time=FIXED_ZIP_TIME), content_types)
        package.writestr(zipfile.ZipInfo("ppt/presentation.xml", date_time=FIXED_ZIP_TIME), presentation)
    return out.getvalue()


def make_database(path: Path) -> None:
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE sales (region TEXT, month TEXT, units INTEGER)")
        connection.executemany("INSERT INTO sales VALUES (?, ?, ?)", [row[:3] for row in SALES_ROWS[1:]])
    connection.close()


def make_wav(path: Path) -> None:
    """A tenth of a second of a 440 Hz tone, 8 kHz mono 16-bit."""
    rate = 8000
    samples = (int(8000 * math.sin(2 * math.pi * 440 * n / rate)) for n in range(rate // 10))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"".join(struct.pack("<h", sample) for sample in samples))


# --- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--skip-ffmpeg",
        action="store_true",
        help="keep the committed videos and mp3 instead of remaking them",
    )
    arguments = parser.parse_args()
    if not arguments.skip_ffmpeg and shutil.which("ffmpeg") is None:
        parser.error("ffmpeg not found on PATH (apt-get install ffmpeg), or pass --skip-ffmpeg")

    SAMPLES.mkdir(exist_ok=True)
    TEST_DATA.mkdir(parents=True, exist_ok=True)
    make_photo(SAMPLES / "photo.jpg")
    make_diagram(SAMPLES / "diagram.png")
    make_animation(SAMPLES / "animation.gif")
    make_sticker(SAMPLES / "sticker.webp")
    make_report(SAMPLES / "report.pdf")
    make_sales(SAMPLES / "sales.csv")
    make_letter(SAMPLES / "letter.docx")
    make_budget(SAMPLES / "budget.xlsx")
    write_text_samples()
    if not arguments.skip_ffmpeg:
        make_videos_and_audio()
    make_rejected_fixtures()
    for folder in (SAMPLES, TEST_DATA):
        for path in sorted(folder.iterdir()):
            print(f"{path.relative_to(ROOT)}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
