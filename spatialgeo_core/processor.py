"""The one processor shared by training and serving: image preprocessing, prompt tokenization with
the image expanded to its visual-token placeholders, and training labels.

Image (reference §6.2), as LLaVA-1.5's "pad" path with the PIL backend of CLIPImageProcessor:
  RGB -> expand to square with background round-down(255 * CLIP mean) = (122, 116, 104),
         image centred
      -> resize the shortest edge to S (PIL bicubic) -> centre crop S x S
      -> x / 255 (float64, then float32) -> (x - mean) / std in float32 -> [3, S, S]
One tensor goes to both towers.

Text (reference §2.1): the prompt is split at `<image>`; each chunk is tokenized on its own; the
first keeps its BOS, later chunks drop theirs; the image becomes `config.num_visual_tokens`
placeholder ids.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from spatialgeo_core.config import SpatialGeoConfig
from spatialgeo_core.conversation import IMAGE_TOKEN, ChatTemplate
from spatialgeo_core.errors import InvalidImageError
from spatialgeo_core.image_msgs import pil_to_rgb
from spatialgeo_core.model import IGNORE_INDEX
from spatialgeo_core.tokenizer import LlamaTokenizer


def to_pil_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """PIL or [H, W, 3|4] / [H, W] uint8 array -> RGB PIL image (an RGB PIL image is returned as
    it is: nothing here draws on it). Raises InvalidImageError.

    A PIL image of another mode is converted by `image_msgs.pil_to_rgb`, the rule of every entry
    point (16-bit grey scaled by 255/65535 as a mono16 message, not clipped)."""
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise InvalidImageError(f"empty image {image.size}")
        if image.mode == "RGB":
            return image
        return Image.fromarray(pil_to_rgb(image), mode="RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InvalidImageError(f"image arrays must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidImageError(f"expected an [H, W, 3] RGB array, got shape {arr.shape}")
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]), mode="RGB")


def expand_to_square(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), background)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def preprocess_image(image: Image.Image | np.ndarray, cfg: SpatialGeoConfig) -> torch.Tensor:
    """-> [3, S, S] float32, CLIP-normalised."""
    img = to_pil_rgb(image)
    size = cfg.clip.image_size
    if cfg.image_aspect_ratio == "pad":
        img = expand_to_square(img, tuple(int(255 * m) for m in cfg.image_mean))
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    img = img.resize((new_w, new_h), resample=Image.BICUBIC)
    arr = np.asarray(img)                                                # [H', W', 3] uint8
    top, left = (new_h - size) // 2, (new_w - size) // 2
    arr = arr[top:top + size, left:left + size]                          # [S, S, 3]
    x = (arr.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array(cfg.image_mean, dtype=np.float32)
    std = np.array(cfg.image_std, dtype=np.float32)
    x = (x - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))  # [3, S, S]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int] | None = None
    num_images: int = 0


class Processor:
    def __init__(self, cfg: SpatialGeoConfig, tokenizer: LlamaTokenizer):
        self.cfg = cfg
        self.tokenizer = tokenizer

    def image(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        return preprocess_image(image, self.cfg)

    def tokenize(self, prompt: str) -> list[int]:
        """Chunked tokenization around `<image>`; each image -> num_visual_tokens placeholders."""
        chunks = [self.tokenizer.encode(c) for c in prompt.split(IMAGE_TOKEN)]
        image = [self.cfg.image_token_id] * self.cfg.num_visual_tokens
        ids = list(chunks[0])
        for c in chunks[1:]:
            ids += image + (c[1:] if c and c[0] == self.tokenizer.bos_id else c)
        return ids

    def image_span(self, ids: list[int]) -> tuple[int, int]:
        """[start, end) of the first image's placeholders in `ids`, (0, 0) when there is none."""
        try:
            start = ids.index(self.cfg.image_token_id)
        except ValueError:
            return (0, 0)
        return (start, start + self.cfg.num_visual_tokens)

    # ---- training ---------------------------------------------------------------------------
    def training_example(self, conversations: list[dict], template: ChatTemplate,
                         has_image: bool) -> Encoded | None:
        """LLaVA-format turns [{"from": "human"|"gpt", "value": ...}] -> ids and labels.

        Labels follow LLaVA's preprocess_v1 / preprocess_plain (user turns and the system prompt
        masked); truncated to config.max_length. None when no supervised token is left, when the
        template arithmetic does not line up (LLaVA's "tokenization mismatch"), or when truncation
        cuts an image.
        """
        turns = _normalise_turns(conversations, has_image)
        if turns is None:
            return None
        if template.style == "plain":
            enc = self._plain(turns, template)
        else:
            enc = self._two(turns, template)
        if enc is None:
            return None
        ids, labels = enc.input_ids[: self.cfg.max_length], enc.labels[: self.cfg.max_length]
        n_img = ids.count(self.cfg.image_token_id)
        if n_img % self.cfg.num_visual_tokens:
            return None                                   # truncation cut through an image
        if all(x == IGNORE_INDEX for x in labels):
            return None
        return Encoded(ids, labels, n_img // self.cfg.num_visual_tokens)

    def _plain(self, turns: list[tuple[str, str]], template: ChatTemplate) -> Encoded | None:
        if len(turns) != 2:
            return None
        text = IMAGE_TOKEN + turns[1][1] + template.sep
        ids = self.tokenize(text)
        n_prefix = len(self.tokenize(IMAGE_TOKEN))
        labels = [IGNORE_INDEX] * n_prefix + ids[n_prefix:]
        return Encoded(ids, labels)

    def _two(self, turns: list[tuple[str, str]], template: ChatTemplate) -> Encoded | None:
        roles = {"human": template.roles[0], "gpt": template.roles[1]}
        prompt = template.render([(roles[r], v) for r, v in turns])
        ids = self.tokenize(prompt)
        labels = list(ids)
        answer_sep = template.sep + template.roles[1] + ": "
        cur = 1
        labels[:cur] = [IGNORE_INDEX]
        for i, rnd in enumerate(prompt.split(template.sep2)):
            if rnd == "":
                break
            parts = rnd.split(answer_sep)
            if len(parts) != 2:
                break
            round_len = len(self.tokenize(rnd))
            instruction_len = len(self.tokenize(parts[0] + answer_sep)) - 2
            if i != 0 and not self.tokenizer.legacy:
                round_len -= 1
                instruction_len -= 1
            labels[cur: cur + instruction_len] = [IGNORE_INDEX] * instruction_len
            cur += round_len
        labels[cur:] = [IGNORE_INDEX] * (len(labels) - cur)
        if cur != len(ids):
            return None                                   # LLaVA: "tokenization mismatch"
        return Encoded(ids, labels)


def _normalise_turns(conversations: list[dict], has_image: bool) -> list[tuple[str, str]] | None:
    """Check alternation (human first), put `<image>\\n` at the start of the first human turn."""
    turns = []
    for i, t in enumerate(conversations):
        role, value = t.get("from"), t.get("value")
        if role not in ("human", "gpt") or not isinstance(value, str):
            return None
        if role != ("human", "gpt")[i % 2]:
            return None
        turns.append((role, value))
    if not turns or turns[-1][0] != "gpt":
        return None
    if has_image:
        first = turns[0][1].replace(IMAGE_TOKEN, "").strip()
        turns[0] = ("human", f"{IMAGE_TOKEN}\n{first}")
    elif any(IMAGE_TOKEN in v for _, v in turns):
        return None
    return turns
