"""What the committed sample files are, shared by every test that uses them."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
DATA = ROOT / "tests" / "data"

# name -> (kind, gateway format), as the gateway must receive each sample.
SAMPLE_KINDS = {
    "photo.jpg": ("image", "jpeg"),
    "diagram.png": ("image", "png"),
    "animation.gif": ("image", "gif"),
    "sticker.webp": ("image", "webp"),
    "clip.mp4": ("video", "mp4"),
    "report.pdf": ("document", "pdf"),
    "sales.csv": ("document", "csv"),
    "letter.docx": ("document", "docx"),
    "budget.xlsx": ("document", "xlsx"),
    "notes.txt": ("text", "txt"),
    "readme.md": ("text", "md"),
    "config.json": ("text", "json"),
}
MEDIA_SAMPLES = {name: kind for name, kind in SAMPLE_KINDS.items() if kind[0] != "text"}
TEXT_SAMPLES = [name for name, kind in SAMPLE_KINDS.items() if kind[0] == "text"]

IMAGE_TOOL = {
    "toolSpec": {
        "name": "generate_image",
        "description": "Generate an image from a description",
        "inputSchema": {"json": {"type": "object", "properties": {"prompt": {"type": "string"}}}},
    }
}
IMAGE_TOOL_CONFIG = {"tools": [IMAGE_TOOL], "autoExecute": True, "allowedTools": ["generate_image"]}
