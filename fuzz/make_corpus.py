#!/usr/bin/env python3
"""Regenerate the small seed corpora in fuzz/corpus/ (committed; run this only to change them).

    python3 fuzz/make_corpus.py [FIXTURES]   # FIXTURES defaults to .sdscope/fixtures

Needs Pillow for the image seeds (the reference venv has it); everything else is the standard library.
"""
import io, json, os, struct, sys
from pathlib import Path

here = Path(__file__).resolve().parent
fixtures = Path(sys.argv[1] if len(sys.argv) > 1 else here.parent / ".sdscope" / "fixtures")
corpus = here / "corpus"


def put(target, name, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: name -> (dtype, shape, raw bytes)."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)

# --- safetensors_header ---------------------------------------------------------------------------------------
put("safetensors_header", "f32_2x2", safetensors({"w": ("F32", [2, 2], f32(1, 2, 3, 4))}))
put("safetensors_header", "mixed", safetensors({
    "a.query.weight": ("F16", [1, 2, 1, 1], b"\x00\x3c\x00\x40"),
    "attentions.0.key.bias": ("BF16", [2], b"\x80\x3f\x00\x40"),
    "i": ("I64", [1], struct.pack("<q", 7)), "b": ("BOOL", [3], b"\x01\x00\x01"),
    "u": ("U8", [0, 5], b""), "d": ("F64", [], struct.pack("<d", 0.5)),
}, {"format": "pt"}))
put("safetensors_header", "shard", safetensors(
    {"x": ("F32", [1, 2], f32(1, 2)), "step": ("I64", [1], struct.pack("<q", 0))},
    {"sdscope": json.dumps({"layout": ["item", "channel"]})}))
put("safetensors_header", "empty", safetensors({}))
put("safetensors_header", "absurd", struct.pack("<Q", 80) + json.dumps(
    {"w": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 18446744073709551615]}},
    separators=(",", ":")).encode()[:80].ljust(80))

# --- configs: first byte 0 unet, 1 vae, 2 text encoder, 3 scheduler -----------------------------------------
for model in ["sd1", "sdxl"]:
    for sel, comp in [(0, "unet/config.json"), (1, "vae/config.json"), (2, "text_encoder/config.json"),
                      (3, "scheduler/scheduler_config.json")]:
        p = fixtures / model / comp
        if p.is_file():
            text = json.dumps(json.loads(p.read_text()), separators=(",", ":"))
            put("configs", f"{model}_{comp.split('/')[0]}", bytes([sel]) + text.encode())

# --- positions -------------------------------------------------------------------------------------------------
for i, p in enumerate(["up_blocks[1].attentions[0]", "mid_block.attentions.0@update", " down_blocks.2 ",
                       "up_blocks[1].attentions[0].transformer_blocks[0].attn2@update", "conv_in@x",
                       "up_blocks[18446744073709551616]", "ünïcödé[0]", "mid_blok"]):
    put("positions", f"p{i}", p)

# --- tokenizer -------------------------------------------------------------------------------------------------
for i, p in enumerate(["a photo of a cat", "", "<|startoftext|>A  DOG!!! <|endoftext|> it's 42 ünïcödé 日本語 🐱",
                       "tab\tnew\nline\u00a0nbsp café ǅ ﬁ", " ".join(["word"] * 100)]):
    put("tokenizer", f"t{i}", p)

# --- images: first byte = extension index | mode << 3 (see fuzz_targets/images.rs) -----------------------------
try:
    from PIL import Image
except ImportError:
    print("Pillow missing: image seeds not regenerated", file=sys.stderr)
else:
    ext = {"png": 0, "jpg": 1, "webp": 2, "bmp": 3, "tiff": 4}

    def image(name, img, fmt, mode_sel=0, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        put("images", name, bytes([ext[fmt_ext[fmt]] | mode_sel << 3]) + b.getvalue())

    fmt_ext = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff"}
    rgb = Image.new("RGB", (9, 8), (200, 30, 60))
    rgb.putpixel((3, 3), (0, 255, 0))
    image("png_rgb", rgb, "PNG")
    image("png_rgba_square", rgb.convert("RGBA"), "PNG", 4)
    image("png_palette", rgb.convert("P"), "PNG", 1)
    image("png_16bit_gray", Image.new("I;16", (8, 16), 40000), "PNG", 5)
    image("png_la", rgb.convert("LA"), "PNG", 2)
    image("jpeg", rgb, "JPEG", 0, quality=50)
    image("webp", rgb, "WEBP", 4, lossless=True)
    image("bmp", rgb, "BMP", 1)
    image("tiff", rgb, "TIFF", 0)

# --- collection_files: u16 length + manifest, u16 length + items.jsonl, then the position's safetensors --------
manifest = json.dumps({
    "format": "sdscope-collection", "version": 1, "sdscope_version": "0.1.0",
    "model": {"spec": "m", "files": [{"path": "unet/x.safetensors", "bytes": 1, "sha256": "00"}]},
    "source": {"kind": "prompts", "spec": "p", "column": None, "items": 2, "fingerprint": "f"},
    "positions": ["mid_block"], "options": {"timesteps": [50]}, "shards": {"count": 1, "items": [2]}, "layout": "x",
}, separators=(",", ":")).encode()
items = b'{"index":0,"prompt":"a cat"}\n{"index":1,"prompt":"a dog"}\n'
shard = safetensors({"x": ("F32", [2, 2], f32(1, 2, 3, 4))}, {"sdscope": json.dumps({"layout": ["item", "channel"]})})
pack = lambda *parts: b"".join(struct.pack("<H", len(p)) + p for p in parts[:-1]) + parts[-1]
put("collection_files", "complete", pack(manifest, items, shard))
put("collection_files", "bad_layout", pack(manifest, b"not json\n", safetensors({"x": ("F32", [1], f32(1))})))
put("collection_files", "fallback_manifest", pack(b"{}", items, shard))

total = sum(f.stat().st_size for f in corpus.rglob("*") if f.is_file())
print(f"{sum(1 for f in corpus.rglob('*') if f.is_file())} seeds, {total} bytes in {corpus}")
