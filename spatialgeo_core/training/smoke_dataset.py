"""A tiny LLaVA-format dataset drawn with PIL, for CPU smoke runs and tests (no downloads).

    <dir>/images/*.png      coloured shapes on grey (64 x 48, so `pad` and `square` differ)
    <dir>/pretrain.json     stage 1 (LLaVA-Pretrain style): `<image>` + a caption per record
    <dir>/train.json        stage 2 (LLaVA-Instruct style): image QA (some with two rounds) and
                            text-only records

With `bad_records`, both files also hold records that training must skip and report: an image file
that does not exist, an image file that is not an image, a malformed conversation, and (train.json)
a record whose answer lies beyond the tiny model's 512-token limit, so nothing supervised is left
after truncation.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 180, 60),
          "yellow": (230, 210, 40)}
SHAPES = ("cube", "sphere", "cylinder", "cone")
PRETRAIN_JSON = "pretrain.json"
TRAIN_JSON = "train.json"


def _draw(path: Path, color: tuple[int, int, int], shape: str, offset: int) -> None:
    img = Image.new("RGB", (64, 48), (128, 128, 128))
    d = ImageDraw.Draw(img)
    x0, y0 = 8 + offset % 24, 6 + offset % 12
    box = (x0, y0, x0 + 24, y0 + 24)
    if shape == "sphere":
        d.ellipse(box, fill=color)
    elif shape == "cone":
        d.polygon([(x0 + 12, y0), (x0, y0 + 24), (x0 + 24, y0 + 24)], fill=color)
    elif shape == "cylinder":
        d.rectangle((x0 + 4, y0, x0 + 20, y0 + 24), fill=color)
    else:
        d.rectangle(box, fill=color)
    img.save(path)


def write_tiny_dataset(directory: str | Path, num_image: int = 32, num_text: int = 8,
                       bad_records: bool = True) -> Path:
    """Write images, pretrain.json and train.json into `directory`; returns the directory."""
    d = Path(directory)
    (d / "images").mkdir(parents=True, exist_ok=True)
    colors, pretrain, train = list(COLORS), [], []
    for i in range(num_image):
        color, shape = colors[i % len(colors)], SHAPES[(i // len(colors)) % len(SHAPES)]
        rel = f"images/{i:03d}.png"
        _draw(d / rel, COLORS[color], shape, offset=i * 5)
        caption = f"a {color} {shape} on the floor"
        pretrain.append({"id": f"cap-{i:03d}", "image": rel, "conversations": [
            {"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": caption}]})
        conv = [{"from": "human", "value": "<image>\nwhat is the object?"},
                {"from": "gpt", "value": caption}]
        if i % 4 == 3:
            conv += [{"from": "human", "value": "what color is it?"},
                     {"from": "gpt", "value": f"it is {color}"}]
        train.append({"id": f"qa-{i:03d}", "image": rel, "conversations": conv})
    for j in range(num_text):
        train.append({"id": f"text-{j:03d}", "conversations": [
            {"from": "human", "value": "how far is the chair from the table?"},
            {"from": "gpt", "value": f"it is about {j % 10} meters"}]})
    if bad_records:
        (d / "images" / "corrupt.png").write_bytes(b"this is not a png file")
        bad = [
            {"id": "bad-missing-image", "image": "images/missing.png", "conversations": [
                {"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": "a red cube"}]},
            {"id": "bad-corrupt-image", "image": "images/corrupt.png", "conversations": [
                {"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": "a blue cone"}]},
            {"id": "bad-malformed", "image": "images/000.png", "conversations": [
                {"from": "gpt", "value": "a red cube"}]},
        ]
        pretrain += bad
        train += bad + [{"id": "bad-truncated", "conversations": [
            {"from": "human", "value": "how far is the chair from the table? " * 80},
            {"from": "gpt", "value": "it is about 3 meters"}]}]
    (d / PRETRAIN_JSON).write_text(json.dumps(pretrain, indent=1))
    (d / TRAIN_JSON).write_text(json.dumps(train, indent=1))
    return d
