"""Chat templates of LLaVA-1.5 (reference §2, §6.1): `llava_v1` (serving), `vicuna_v1` (training),
`plain` (stage-1 captioning). Pure data: no module-global "current template"."""
from __future__ import annotations

from dataclasses import dataclass

IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    system: str
    roles: tuple[str, str] = ("USER", "ASSISTANT")
    sep: str = " "
    sep2: str | None = "</s>"
    style: str = "two"                 # "two" (sep after user turns, sep2 after assistant)
                                       # | "plain"

    def render(self, turns: list[tuple[str, str | None]]) -> str:
        """turns: [(role, message or None)]; a None message opens that role's turn for
        generation.
        """
        if self.style == "plain":
            out = self.system
            for _, msg in turns:
                out += (msg + self.sep) if msg else ""
            return out
        seps = (self.sep, self.sep2)
        out = self.system + self.sep
        for i, (role, msg) in enumerate(turns):
            out += f"{role}: {msg}{seps[i % 2]}" if msg else f"{role}:"
        return out

    def prompt(self, question: str, history: list[tuple[str, str]] = (),
               with_image: bool = True) -> str:
        """The prompt that asks `question` after earlier (question, answer) pairs, the image in the
        first user turn as `<image>\\n` + text."""
        turns: list[tuple[str, str | None]] = []
        qs = [q for q, _ in history] + [question]
        for i, q in enumerate(qs):
            if i == 0 and with_image:
                q = f"{IMAGE_TOKEN}\n{q}"
            turns.append((self.roles[0], q))
            turns.append((self.roles[1], history[i][1] if i < len(history) else None))
        return self.render(turns)


TEMPLATES = {
    "llava_v1": ChatTemplate(
        "llava_v1",
        "A chat between a curious human and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the human's questions."),
    "vicuna_v1": ChatTemplate(
        "vicuna_v1",
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions."),
    "plain": ChatTemplate("plain", "", roles=("", ""), sep="\n", sep2=None, style="plain"),
}


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown chat template {name!r}; known: {sorted(TEMPLATES)}") from None
