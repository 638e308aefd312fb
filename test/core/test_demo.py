"""The README's first command: `spatialgeo demo` on the embedded default model, and how a demo
checkpoint becomes that default (`reproduce --install-asset`)."""
import json
import re

import pytest

from spatialgeo_core import default_model
from spatialgeo_core.cli import main
from spatialgeo_core.config import SpatialGeoConfig
from spatialgeo_core.demo.reproduce import install_asset
from spatialgeo_core.tiny import build_tiny_checkpoint

needs_asset = pytest.mark.skipif(
    not (default_model.EMBEDDED_DIR / "config.json").is_file(),
    reason="no demo checkpoint under spatialgeo_core/assets/default_model (a trimmed checkout); "
           "the random model is tested below")


def _evaluated_run(tmp_path):
    """A reproduce output dir with an evaluated 'fused' model (a tiny random one)."""
    out = tmp_path / "run"
    build_tiny_checkpoint(out / "fused" / "model", seed=0)
    (out / "fused" / "eval").mkdir(parents=True)
    (out / "fused" / "eval" / "metrics.json").write_text(json.dumps(
        {"num_items": 400, "parse_failures": 0}))
    (out / "ablation.md").write_text("| model | ... |\n")
    (out / "summary-fused.json").write_text(json.dumps({"fused": {"train_s": 1234.5}}))
    return out


def test_install_asset_copies_the_model_its_scores_and_how_it_was_made(tmp_path):
    import os

    out = _evaluated_run(tmp_path)
    for name, start, end in (("stage2", 5000, 6680), ("stage1", 1000, 2620)):   # 27 and 28 min
        d = out / "fused" / name
        (d / "export" / "merged").mkdir(parents=True)
        (d / "train_config.yaml").write_text("")
        (d / "export" / "merged" / "model.safetensors").write_text("")
        os.utime(d / "train_config.yaml", (start, start))
        os.utime(d / "export" / "merged" / "model.safetensors", (end, end))
    dest = tmp_path / "assets" / "default_model"
    dest.mkdir(parents=True)
    (dest / "stale.bin").write_text("old")
    summary = {"prepare": {"semantic": {"colour_acc_objects": 0.9},
                           "world": {"wording": "facts_all"}},
               "machine": "AMD EPYC, 2 cores"}
    assert install_asset(out, dest, summary, ["--out", "runs/demo"]) == dest
    assert not (dest / "stale.bin").exists() and not dest.with_name("default_model.tmp").exists()
    for f in ("config.json", "model.safetensors", "tokenizer.model", "eval_metrics.json"):
        assert (dest / f).is_file(), f
    text = (dest / "TRAINING.md").read_text()
    assert "python -m spatialgeo_core.demo.reproduce --out runs/demo" in text
    assert "1234.5 s" in text and "colour_acc_objects" in text and "| model | ... |" in text
    assert "trained for 1234.5 s on AMD EPYC, 2 cores" in text
    assert "last file:\nstage1 27 min, stage2 28 min." in text
    assert 'in the "facts_all" wording' in text             # the wording the world was made in
    assert SpatialGeoConfig.load(dest) == SpatialGeoConfig.load(out / "fused" / "model")


def test_install_asset_refuses_an_unevaluated_or_oversized_model(tmp_path, monkeypatch):
    out = _evaluated_run(tmp_path)
    dest = tmp_path / "default_model"
    (out / "fused" / "eval" / "metrics.json").unlink()
    with pytest.raises(RuntimeError, match="no evaluated fused model"):
        install_asset(out, dest, {}, [])
    out = _evaluated_run(tmp_path / "again")
    from spatialgeo_core.demo import reproduce
    monkeypatch.setattr(reproduce, "MAX_ASSET_BYTES", 1000)
    with pytest.raises(RuntimeError, match="25 MiB"):
        install_asset(out, dest, {}, [])
    assert not dest.exists()


@needs_asset
def test_the_demo_checkpoint_is_embedded_and_small():
    d = default_model.EMBEDDED_DIR
    assert default_model.embedded_model_path() == d
    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    assert size <= 25 * 2**20, f"{size / 2**20:.1f} MiB"
    cfg = SpatialGeoConfig.load(d)
    assert cfg.geometry is not None                     # the fused model, not the ablation
    assert (d / "tokenizer.model").is_file() and (d / "TRAINING.md").is_file()
    metrics = json.loads((d / "eval_metrics.json").read_text())
    # an answer about another quantity than the one asked ("Is Region [0] behind ...?" -> "...
    # So Region [0] is wider than Region [1].") cannot be read as the asked relation: 1 of 400
    assert metrics["num_items"] >= 400 and metrics["parse_failures"] <= 4


@needs_asset
def test_demo_answers_a_held_out_scene_beside_its_ground_truth(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "(held out)" in out and "Region [0]" in out and "Region [1]" in out
    assert "facts:" in out and "conclusion:" in out and "ground truth:" in out
    assert "(exact: " in out
    assert "RANDOMLY INITIALISED" not in out
    assert not any(tmp_path.iterdir())                  # loading writes nothing anywhere


def _held_out_lengths(model_dir, n: int) -> list[tuple[float | None, str, str, str]]:
    """(read value, category, question, answer) of the first n held-out length questions."""
    from spatialgeo_core.answer_parsing import QUANTITATIVE_CATEGORIES, parse_distance_m
    from spatialgeo_core.demo.data import DemoWorld
    from spatialgeo_core.pipeline import SpatialGeoPipeline
    from spatialgeo_core.synthetic import make_sample
    from spatialgeo_core.types import GenerationOptions, Region

    pipe = SpatialGeoPipeline.from_pretrained(model_dir)
    world = DemoWorld(seed=default_model.DEMO_SEED).test_config()
    out, i = [], 0
    while len(out) < n:
        sample = make_sample(default_model.DEMO_SEED, "test", i, world)
        i += 1
        for qa in sample.qas:
            if qa.category in QUANTITATIVE_CATEGORIES and len(out) < n:
                regions = [Region(mask=sample.rendering.mask(o)) for o in qa.regions]
                text = pipe.answer(sample.rgb, qa.question, regions=regions,
                                   options=GenerationOptions(max_new_tokens=96)).text
                out.append((parse_distance_m(text), qa.category, qa.question, text))
    return out


def _reading(model_dir, scenes: int) -> dict:
    """demo/reading.py on the first held-out scenes: what the model reads of each region."""
    from spatialgeo_core.demo.data import DESCRIBE, DemoWorld
    from spatialgeo_core.demo.reading import answer_with, evaluate_reading
    from spatialgeo_core.pipeline import SpatialGeoPipeline

    return evaluate_reading(answer_with(lambda: SpatialGeoPipeline.from_pretrained(model_dir)),
                            DemoWorld(seed=default_model.DEMO_SEED), scenes, DESCRIBE, 160)


@needs_asset
def test_the_embedded_model_answers_held_out_lengths_in_readable_metres():
    """Twenty held-out length questions: every answer reads as a length (a random model's does
    not), and they are more than one value per category (each category's training median, what
    a model that does not look says, is one). The answers state both regions' positions first
    (facts_all), so the budget is the demo's 96 tokens, not a bare length's. How often they are
    within 25 % is in eval_metrics.json (README: above the median on 400 questions, with
    overlapping intervals), so not claimed on twenty here."""
    got = _held_out_lengths(default_model.EMBEDDED_DIR, 20)
    assert all(v is not None for v, *_ in got), [(q, a) for v, _, q, a in got if v is None]
    assert len({v for v, *_ in got}) > len({c for _, c, *_ in got}), got


@needs_asset
def test_the_embedded_model_reads_held_out_regions_better_than_the_training_median():
    """Asked "Describe the marked regions." about 20 held-out scenes (42 regions), the model
    names each region's colour far above chance (1 in 10), states its distance ahead within 25 %
    far more often than always saying the training scenes' median would (the prior of a model
    that does not look), and says which side of the camera it is on above chance. Measured on
    the committed model (README; run r12): colour 81.0 %, ahead 73.8 % against the median's
    45.2 %, side 78.6 % (r9, the default before it: 78.6 / 85.7 / 78.6); a stand-in that always
    states the median fails (colour 12 %, ahead 45.2 %), as does r6, the default before r9
    (side 47.6 % on these scenes)."""
    r = _reading(default_model.EMBEDDED_DIR, 20)
    assert r["described_pct"] >= 90, r
    assert r["colour_pct"] >= 40, r
    ahead = r["ahead"]
    assert ahead["within_25_pct"] >= ahead["median_prior_within_25_pct"] + 20, r
    assert r["side"]["side_right_pct"] >= 65, r


@needs_asset
def test_the_embedded_models_geometry_tokens_hold_what_its_clip_tokens_do_not(capsys):
    """demo/probe.py on the committed model (fitted on 150 training scenes, scored on 40 held-out
    ones): a linear read of its geometry tokens over a region finds the region's side of the
    camera (measured 93.9 % on 100 held-out scenes) where its CLIP tokens are near chance (56 %),
    and its distance ahead within 25 % above the training median. The paper's point, in the
    model's input: the geometry tower adds what CLIP does not see."""
    from spatialgeo_core.demo import probe

    assert probe.main([str(default_model.EMBEDDED_DIR), "--seed", str(default_model.DEMO_SEED),
                       "--train-scenes", "150", "--test-scenes", "40"]) == 0
    streams = json.loads(capsys.readouterr().out)["streams"]
    geo, clip = streams["geometry"], streams["clip"]
    assert geo["side_right_pct"] >= 80 and geo["side_right_pct"] >= clip["side_right_pct"] + 20
    assert geo["ahead"]["within_25_pct"] >= geo["ahead"]["median_prior_within_25_pct"] + 10
    assert streams["both"]["side_right_pct"] >= 80


def test_without_the_asset_a_random_model_is_an_explicit_command(tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.setattr(default_model, "EMBEDDED_DIR", tmp_path / "no-asset")
    assert main(["demo"]) == 2                 # no model is made behind the user's back
    assert "spatialgeo random-model" in capsys.readouterr().err
    random = tmp_path / "random"
    assert main(["random-model", "--out", str(random)]) == 0
    assert "RANDOMLY INITIALISED" in capsys.readouterr().out
    assert main(["demo", "--model-path", str(random)]) == 0
    out = capsys.readouterr().out
    assert "question: How far is Region [0] from Region [1]?" in out
    assert "RANDOMLY INITIALISED" in out and "mean nothing" in out
    assert (random / "model.safetensors").is_file()


def test_the_random_model_is_never_written_over(tmp_path, capsys):
    p = tmp_path / "random"
    assert main(["random-model", "--out", str(p)]) == 0
    stamp = (p / "model.safetensors").stat().st_mtime_ns
    assert main(["random-model", "--out", str(p)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (p / "model.safetensors").stat().st_mtime_ns == stamp


def test_the_world_demo_asks_about_a_held_out_scene(tmp_path, capsys):
    """What `spatialgeo demo` prints with a demo checkpoint (run here on a tiny random model)."""
    from spatialgeo_core.pipeline import SpatialGeoPipeline
    path = build_tiny_checkpoint(tmp_path / "m", seed=0)
    assert default_model._run_world_demo(SpatialGeoPipeline.from_pretrained(path), path) == 0
    out = capsys.readouterr().out
    assert "synth-test-0-" in out and "(held out)" in out
    assert "question:" in out and "Region [0]" in out and "Region [1]" in out
    assert "ground truth:" in out and "(exact: " in out
    assert re.search(r"\(exact: \d+\.\d\d m; Region \[0\]: \d+\.\d m ahead, ", out)   # positions


def test_demo_world_files_hold_the_captions_twice_and_the_captions_hold_the_truth(tmp_path):
    """Stage 1 reads every training scene's caption; stage 2's llava.json holds one record per
    question (the asked regions only, facts answers), then every caption_every-th caption as a
    DESCRIBE question with the same answer (caption_repeats times), then the text-only drills;
    a caption's numbers are the scene's ground truth, in the quantities and words of the facts
    answers."""
    import dataclasses
    import re

    from spatialgeo_core.demo.data import DESCRIBE, DemoWorld, write_world
    from spatialgeo_core.synthetic import iter_samples
    from spatialgeo_core.synthetic.facts import quantity

    world = DemoWorld(train_images=5, test_images=2, caption_every=2, drill_share=0.5,
                      caption_drill_share=0.0)
    paths = write_world(world, tmp_path)
    captions = json.loads(paths["captions"].read_text())
    train = json.loads(paths["train"].read_text())
    samples = list(iter_samples(5, world.seed, "train", world.train_config()))
    n_questions = sum(len(s.qas) for s in samples)
    questions, rest = train[:n_questions], train[n_questions:]
    described, drills = rest[:3], rest[3:]
    assert len(captions) == 5 and all("qa_info" in r for r in questions)
    assert all(r["conversations"][0]["value"] == "<image>\n" + DESCRIBE for r in described)
    by_image = {r["image"]: r["conversations"][1]["value"] for r in captions}
    for r in described:
        assert r["conversations"][1]["value"] == by_image[r["image"]]
    assert [r["image"] for r in described] == [captions[i]["image"] for i in (0, 2, 4)]
    assert DESCRIBE in paths["corpus"].read_text()
    twice = json.loads(write_world(dataclasses.replace(world, caption_every=1, caption_repeats=2),
                                   tmp_path / "twice")["train"].read_text())[n_questions:]
    assert [r["image"] for r in twice[:10]] == [c["image"] for c in captions for _ in (0, 1)]
    assert [r["conversations"] for r in twice[:10]] == [
        c["conversations"] for c in captions for _ in (0, 1)]
    assert len({r["id"] for r in twice}) == len(twice)

    with_facts = [r for r in questions if " So " in r["conversations"][1]["value"]]
    assert len(drills) == len(with_facts) // 2 > 0
    stage0 = json.loads(paths["drills"].read_text())          # every drill, for stage 0
    assert [d["id"] for d in stage0] == [r["id"] + "-drill" for r in with_facts]
    assert all(d in stage0 for d in drills)
    for d in drills:                                  # text only: the facts, then the question
        assert "image" not in d and "regions" not in d
        human, answer = (t["value"] for t in d["conversations"])
        assert "<image>" not in human and human.startswith(answer.rsplit(" So ", 1)[0])

    fact = re.compile(r"Region \[(\d)\]: (\w+) (\w+), ([\d.]+) m ahead, ([\d.]+) m (left|right), "
                      r"(-?[\d.]+) m up, ([\d.]+) m wide, ([\d.]+) m tall, "
                      r"([\d.]+) cubic metres\.")
    for sample, rec in zip(samples, captions, strict=True):
        found = fact.findall(rec["conversations"][1]["value"])
        assert len(found) == len(sample.regions) >= 2
        for k, colour, shape, y, x, side, z, w, h, v in found:
            info = sample.rendering.objects[sample.regions[int(k)]]
            assert (colour, shape) == (info.color, info.shape)
            assert float(y) == pytest.approx(quantity(info, "ahead"), abs=0.051)
            assert float(x) == pytest.approx(abs(quantity(info, "side")), abs=0.051)
            assert side == ("right" if quantity(info, "side") >= 0 else "left")
            assert float(z) == pytest.approx(quantity(info, "up"), abs=0.051)
            assert (float(w), float(h)) == pytest.approx(info.size[:2], abs=0.051)
            assert float(v) == pytest.approx(info.volume, abs=0.0051)


def test_position_drills_come_from_scenes_no_record_shows(tmp_path):
    """position_drill_images: stage 2 ends with text-only drills of the lengths and directions
    of further training-split scenes (after train_images), one per scene and category of
    POSITION_FACTS, whose result is the truth computed from the scene; the records before them
    are those of a world without them, and none is written without facts_all."""
    import re

    from spatialgeo_core.demo.data import DemoWorld, position_drills, write_world
    from spatialgeo_core.synthetic import iter_samples
    from spatialgeo_core.synthetic.questions import POSITION_FACTS, center_distance

    base = DemoWorld(train_images=3, test_images=1)
    world = DemoWorld(train_images=3, test_images=1, position_drill_images=4)
    plain = json.loads(write_world(base, tmp_path / "a")["train"].read_text())
    paths = write_world(world, tmp_path / "b")
    train = json.loads(paths["train"].read_text())
    drills = train[len(plain):]
    assert train[:len(plain)] == plain and drills == position_drills(world)
    assert 4 * 3 <= len(drills) <= 4 * len(POSITION_FACTS)
    shown = {r["id"].split("-q")[0].rsplit("-", 1)[0] for r in plain if "image" in r}
    ids = {int(re.match(r"synth-train-0-(\d+)-", d["id"]).group(1)) for d in drills}
    assert ids == {3, 4, 5, 6} and not shown & {f"synth-train-0-{i:06d}" for i in ids}
    for d in drills:
        human, answer = (t["value"] for t in d["conversations"])
        assert "image" not in d and human.startswith(answer.rsplit(" So ", 1)[0])
    assert drills[0]["conversations"][1]["value"] in paths["corpus"].read_text()
    # a distance drill's result is its scene's truth (2 significant figures)
    samples = {s.index: s for s in iter_samples(7, world.seed, "train", world.train_config())}
    for d in drills:
        if "-distance_data-" not in d["id"]:
            continue
        sample = samples[int(re.match(r"synth-train-0-(\d+)-", d["id"]).group(1))]
        objects = {o.index: o for o in sample.rendering.objects}
        found = re.search(r"about ([\d.]+) m from", d["conversations"][1]["value"])
        truths = [center_distance(objects[a], objects[b]) for a in sample.regions
                  for b in sample.regions if a != b]
        assert any(abs(float(found.group(1)) - t) <= 0.051 for t in truths)
    assert position_drills(DemoWorld(position_drill_images=2, wording="facts")) == []
    with pytest.raises(ValueError, match="position_drill_images"):
        DemoWorld(position_drill_images=-1)


def test_stage1_keeps_drilling_the_conclusion_when_asked(tmp_path):
    """caption_drill_share: stage 1's file is every caption, then that many drills per caption
    taken evenly from all drills (stage 0's skill is kept while stage 1 learns to read regions);
    0 leaves the captions alone."""
    from spatialgeo_core.demo.data import DemoWorld, write_world

    plain = write_world(DemoWorld(train_images=6, test_images=1, caption_drill_share=0.0),
                        tmp_path / "a")
    mixed = write_world(DemoWorld(train_images=6, test_images=1, caption_drill_share=0.5),
                        tmp_path / "b")
    captions = json.loads(plain["captions"].read_text())
    stage1 = json.loads(mixed["captions"].read_text())
    drills = json.loads(mixed["drills"].read_text())
    assert len(captions) == 6 and len(drills) >= 3
    assert stage1[:6] == captions and len(stage1) == 6 + 3
    assert all(d in drills for d in stage1[6:]) and len({d["id"] for d in stage1[6:]}) == 3
    with pytest.raises(ValueError, match="caption_drill_share"):
        DemoWorld(caption_drill_share=1.5)
    # a drill's conclusion depends on its question: stage 1's template must keep it (plain
    # drops the user turn), and the captions are asked for as in stage 2
    import yaml

    from spatialgeo_core.conversation import TEMPLATES
    from spatialgeo_core.demo.data import DESCRIBE
    from spatialgeo_core.demo.reproduce import CONFIG_DIR
    template = yaml.safe_load((CONFIG_DIR / "demo_stage1.yaml").read_text())["data"]["template"]
    assert TEMPLATES[template].style != "plain"
    assert all(c["conversations"][0]["value"] == "<image>\n" + DESCRIBE for c in captions)


def test_a_stopped_demo_training_is_one_line_and_exit_status_1(monkeypatch, capsys):
    from spatialgeo_core.demo import reproduce

    def stopped(args):
        raise RuntimeError("stage 2 (fused) stopped at step 10 of 1500 (paused); run the "
                           "command again to resume it")

    monkeypatch.setattr(reproduce, "run", stopped)
    assert main(["demo-train", "--out", "unused"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("demo training: stage 2 (fused) stopped at step 10 of 1500 (paused); "
                           "run the command again to resume it")
