"""The embedded default model, and the README's first command (`spatialgeo demo`).

The default is the demo checkpoint under `spatialgeo_core/assets/default_model/`, trained from
scratch on the synthetic world (spatialgeo_core.demo; see TRAINING.md there): `spatialgeo demo`
renders a held-out scene, asks about two regions and prints the ground truth beside the answer.
The loader never picks a model by itself: the CLI (no --model-path) and the node (model.path "")
ask `embedded_model_path()` for this one. A trimmed install has no asset; a tiny randomly
initialised model is then an explicit command (`spatialgeo random-model --out DIR`), and
`spatialgeo demo --model-path DIR` says that its answers mean nothing.

Importing this module is cheap: the demo imports what it needs when it runs.
"""
from __future__ import annotations

from pathlib import Path

from spatialgeo_core.errors import CheckpointError

EMBEDDED_DIR = Path(__file__).resolve().parent / "assets" / "default_model"
RANDOM_MARKER = "RANDOM_WEIGHTS.md"         # in a model directory `random-model` wrote
RANDOM_WARNING = ("this is a tiny RANDOMLY INITIALISED SpatialGeo built on this machine "
                  "(`spatialgeo random-model`): its answers mean nothing; pass --model-path for "
                  "real weights")


def embedded_model_path() -> Path:
    """The embedded demo checkpoint; CheckpointError when this install has none."""
    if (EMBEDDED_DIR / "config.json").is_file():
        return EMBEDDED_DIR
    raise CheckpointError(
        f"this install has no embedded default model ({EMBEDDED_DIR} is missing): give a model "
        "directory (--model-path, or the node's model.path), or write a tiny randomly "
        "initialised one with `spatialgeo random-model --out DIR`")


def sample_scene(size: int = 224):
    """A simple synthetic picture (two boxes on a floor) and the boxes around them."""
    from PIL import Image, ImageDraw

    from spatialgeo_core.types import Region
    img = Image.new("RGB", (size, size), (170, 200, 235))
    d = ImageDraw.Draw(img)
    d.rectangle([0, size // 2, size, size], fill=(140, 120, 100))
    a = (int(size * 0.15), int(size * 0.45), int(size * 0.35), int(size * 0.7))
    b = (int(size * 0.6), int(size * 0.55), int(size * 0.9), int(size * 0.85))
    d.rectangle(a, fill=(200, 40, 40))
    d.rectangle(b, fill=(40, 60, 200))
    return img, [Region(box=tuple(float(v) for v in a)), Region(box=tuple(float(v) for v in b))]


DEMO_SEED = 0                 # the world seed the demo checkpoint was trained with
DEMO_SCENE_INDEX = 7          # a held-out (test split) scene: never seen in training
DEMO_CATEGORIES = ("behind_predicate", "left_choice", "distance_data")   # asked, when the scene
#                               has them (the first held-out scene from DEMO_SCENE_INDEX that
#                               asks a comparison and a distance)


def is_random_model(path: str | Path) -> bool:
    """Whether `spatialgeo random-model` wrote the model in `path`."""
    return (Path(path) / RANDOM_MARKER).is_file()


def write_random_model(out: str | Path, seed: int = 0) -> Path:
    """`spatialgeo random-model`: a tiny randomly initialised SpatialGeo and its tokenizer in
    `out` (our format), marked as random; an existing `out` is never overwritten."""
    from spatialgeo_core.tiny import build_tiny_checkpoint

    out = Path(out)
    if out.exists():
        raise CheckpointError(f"{out} already exists: choose another --out (a model directory is "
                              "never overwritten)")
    build_tiny_checkpoint(out, seed=seed)
    (out / RANDOM_MARKER).write_text(f"# Random weights\n\nThe weights of this model were drawn "
                                     f"at random (seed {seed}) by `spatialgeo random-model`. "
                                     f"Its answers mean nothing: it exercises the code path.\n")
    return out


def run_demo(device: str = "cpu", model_path: str | None = None) -> int:
    """`spatialgeo demo`: the embedded model (or `model_path`) asked about a held-out scene; a
    random model (`spatialgeo random-model`) about a sample picture, with a warning."""
    from spatialgeo_core.load_options import LoadOptions
    from spatialgeo_core.pipeline import SpatialGeoPipeline

    path = Path(model_path) if model_path else embedded_model_path()
    pipe = SpatialGeoPipeline.from_pretrained(LoadOptions(path=str(path), device=device))
    if is_random_model(path):
        return _run_random_demo(pipe, path)
    return _run_world_demo(pipe, path)


def _demo_questions(world):
    """The first held-out scene from DEMO_SCENE_INDEX with a comparison and a distance question,
    and those two questions."""
    from spatialgeo_core.synthetic import make_sample
    index = DEMO_SCENE_INDEX
    while True:
        sample = make_sample(DEMO_SEED, "test", index, world)
        comparison = [qa for qa in sample.qas if qa.qa_type == "qualitative"]
        distance = [qa for qa in sample.qas if qa.category == "distance_data"]
        if comparison and distance:
            preferred = [qa for qa in comparison if qa.category in DEMO_CATEGORIES]
            return sample, [(preferred or comparison)[0], distance[0]]
        index += 1


def _run_world_demo(pipe, path: Path) -> int:
    """A held-out synthetic scene, a comparison and a distance question about two of its regions:
    the model's facts, its conclusion (as the scorer reads it) and the ground truth."""
    from spatialgeo_core.answer_parsing import (
        category_kind,
        category_relation,
        parse_choice,
        parse_distance_m,
        parse_predicate,
    )
    from spatialgeo_core.demo.data import DemoWorld
    from spatialgeo_core.synthetic.facts import RELATION_QUANTITY, fact_sentence
    from spatialgeo_core.synthetic.questions import POSITION_FACTS
    from spatialgeo_core.types import GenerationOptions, Region

    sample, qas = _demo_questions(DemoWorld(seed=DEMO_SEED).test_config())
    objects = sample.rendering.objects
    qa = qas[0]
    names = ", ".join(f"Region [{k}] = {objects[o].color} {objects[o].shape}"
                      for k, o in enumerate(qa.regions))
    print(f"model:        {path}")
    print(f"scene:        {sample.id} (held out), {names}")
    for qa in qas:
        regions = [Region(box=tuple(float(v) for v in objects[o].box2d),
                          mask=sample.rendering.mask(o)) for o in qa.regions]
        ans = pipe.answer(sample.rgb, qa.question, regions=regions,
                          options=GenerationOptions(max_new_tokens=96))
        facts, _, conclusion = ans.text.rpartition(" So ")
        print(f"question:     {qa.question}")
        if facts:
            print(f"facts:        {facts}")
            print(f"conclusion:   So {conclusion}")
        else:
            print(f"answer:       {ans.text}")
        kind = category_kind(qa.category)
        # the true facts in the quantities a trained answer states: both positions for a
        # distance, the compared quantity for a comparison
        quantities = POSITION_FACTS[qa.category] if kind == "distance" else (
            RELATION_QUANTITY[category_relation(qa.category)],)
        true_facts = " ".join(fact_sentence(f"Region [{k}]", objects[o], quantities)
                              for k, o in enumerate(qa.regions))
        if kind == "distance":
            got = parse_distance_m(ans.text)
            read = "unreadable" if got is None else f"{got:.2f} m"
            print(f"read as:      {read}")
            print(f"ground truth: {qa.answer} (exact: {qa.value:.2f} m; {true_facts})")
        else:
            if kind == "predicate":
                got = parse_predicate(ans.text, qa.category, qa.question)
                read = {True: "yes", False: "no", None: "unreadable"}[got]
                truth = "yes" if qa.value else "no"
            else:
                read = parse_choice(ans.text, qa.question, qa.category) or "unreadable"
                truth = qa.stated
            print(f"read as:      {read}")
            print(f"ground truth: {truth} ({true_facts})")
        print(f"tokens:       {ans.num_tokens} generated, {ans.num_visual_tokens} visual; "
              f"{ans.timings_ms['total']:.0f} ms total")
    return 0


def _run_random_demo(pipe, path: Path) -> int:
    from spatialgeo_core.types import GenerationOptions

    image, regions = sample_scene()
    question = "How far is Region [0] from Region [1]?"
    ans = pipe.answer(image, question, regions=regions,
                      options=GenerationOptions(max_new_tokens=24))
    print(f"model:    {path}")
    print(f"question: {question}")
    print(f"answer:   {ans.text!r}")
    print(f"tokens:   {ans.num_tokens} generated, {ans.num_visual_tokens} visual; "
          f"{ans.timings_ms['total']:.0f} ms total")
    print(f"NOTE:     {RANDOM_WARNING}.")
    return 0
