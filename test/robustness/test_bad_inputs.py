"""The bad-input corpus of issue 16, through the public CLI (`spatialgeo ...`, main(argv) in this
process): every input that once ended in a traceback, lost an answer already computed, or gave a
silently wrong result. Each must now end in a one-line error (exit 2), in an error record while
an evaluation goes on, in a clear refusal, or in a correct result; nothing computed is lost.

CASES, at the bottom, lists every case of the issue, how it ends and the test that tries it;
`test_the_corpus_covers_every_case_of_the_issue` keeps the table and the tests in step.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from spatialgeo_core.cli import main
from spatialgeo_core.image_msgs import array_to_rgb
from spatialgeo_core.limits import MAX_IMAGE_PIXELS_ENV

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "training" / "configs"
QUESTION = "How far is Region [0] from Region [1]?"
REGIONS = ["--region", "1,1,20,20", "--region", "30,10,60,40"]


# -------------------------------------------------------------------------------------------------
# helpers


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(rc: int, err: str, cmd: str, *needles: str, code: int = 2) -> str:
    """The command ended with `code` and exactly one line of its own on stderr (third-party
    warnings aside), no traceback, naming every needle; returns that line."""
    assert "Traceback" not in err, err
    ours = [ln for ln in err.splitlines() if ln.startswith("spatialgeo ")]
    assert rc == code and len(ours) == 1, (rc, err)
    line = ours[0]
    assert line.startswith(f"spatialgeo {cmd}: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height but holds almost no data: what an image bomb looks
    like before it is decoded (Pillow reads the size from the header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)          # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def model_variant(tiny_dir: Path, dest: Path, edit) -> Path:
    """tiny_dir with its config.json replaced by edit(config dict) (the other files linked)."""
    dest.mkdir(parents=True)
    for f in Path(tiny_dir).iterdir():
        if f.name != "config.json":
            (dest / f.name).symlink_to(f)
    cfg = json.loads((Path(tiny_dir) / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps(edit(cfg)))
    return dest


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(d / "scene.png")
    # 16-bit grey over the whole range: PIL's convert("RGB") clips all but 1/256 of it to white
    grey16 = (np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(grey16).save(d / "grey16.png")
    Image.fromarray(array_to_rgb(grey16, "mono16")).save(d / "grey16_ros_rule.png")
    with Image.open(d / "grey16.png") as img:
        img.convert("RGB").save(d / "grey16_clipped.png")
    png_header_only(d / "bomb_196mp.png", 14000, 14000)
    png_header_only(d / "big_108mp.png", 12000, 9000)
    return d


def ask(model: Path, image: Path, *extra) -> list:
    return ["ask", "--model-path", model, "--image", image, "--question", QUESTION, *REGIONS,
            "--max-new-tokens", "2", *extra]


# -------------------------------------------------------------------------------------------------
# spatialgeo ask: images, regions, options, model configs


def _config_list(cfg):
    return [cfg]


def _string_number(cfg):
    cfg["llm"]["hidden_size"] = str(cfg["llm"]["hidden_size"])
    return cfg


def _patch_size_zero(cfg):
    cfg["clip"]["patch_size"] = 0
    return cfg


def _format_version_string(cfg):
    cfg["format_version"] = "2"
    return cfg


ASK_REFUSALS = {
    # case id: (image, extra argv, config edit or None, what the one line names)
    "image_196_megapixels": ("bomb_196mp.png", [], None, "too large"),
    "image_over_the_pixel_limit": ("big_108mp.png", [], None, MAX_IMAGE_PIXELS_ENV),
    "box_narrower_than_a_pixel": ("scene.png", ["--region", "10,10,10.5,10.5"], None,
                                  "narrower than one pixel"),
    "config_json_is_a_list": ("scene.png", [], _config_list, "not an object"),
    "string_where_a_number_belongs": ("scene.png", [], _string_number,
                                      "llm.hidden_size: expected an integer"),
    "patch_size_zero": ("scene.png", [], _patch_size_zero, "clip.patch_size: must be positive"),
    "format_version_string": ("scene.png", [], _format_version_string,
                              "format_version: expected a positive integer"),
    "device_tpu9": ("scene.png", ["--device", "tpu9"], None, "device 'tpu9'"),
    "temperature_nan": ("scene.png", ["--temperature", "nan"], None, "temperature"),
    "region_5_of_2": ("scene.png", ["--question", "Is Region [5] left of Region [0]?"], None,
                      "Region [5]"),
}


@pytest.mark.parametrize("case", sorted(ASK_REFUSALS))
def test_ask_refuses_in_one_line(case, images, tiny_dir, tmp_path, capsys):
    image, extra, edit, needle = ASK_REFUSALS[case]
    model = model_variant(tiny_dir, tmp_path / "m", edit) if edit else tiny_dir
    rc, out, err = run(capsys, *ask(model, images / image, *extra))
    one_line_error(rc, err, "ask", needle)
    assert out == ""                                   # refused, not answered


def test_the_pixel_limit_is_configurable(images, tiny_dir, monkeypatch, capsys):
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "1000")
    rc, _, err = run(capsys, *ask(tiny_dir, images / "scene.png"))
    one_line_error(rc, err, "ask", "64x48 = 3,072 pixels", "limit of 1,000")
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "a lot")
    rc, _, err = run(capsys, *ask(tiny_dir, images / "scene.png"))
    one_line_error(rc, err, "ask", f"{MAX_IMAGE_PIXELS_ENV}='a lot'")


def test_demo_refuses_an_unknown_device(capsys):
    rc, _, err = run(capsys, "demo", "--device", "bogus")
    one_line_error(rc, err, "demo", "device 'bogus'")


@pytest.mark.parametrize("target", ["a_directory", "a_missing_directory"])
def test_save_logits_that_cannot_be_written_keeps_the_answer(target, images, tiny_dir, tmp_path,
                                                             capsys):
    path = tmp_path if target == "a_directory" else tmp_path / "missing" / "logits.safetensors"
    rc, out, err = run(capsys, *ask(tiny_dir, images / "scene.png", "--json",
                                    "--save-logits", path))
    one_line_error(rc, err, "ask", "--save-logits", "the answer was printed above")
    answer = json.loads(out)                           # the answer computed is not lost
    assert answer["num_tokens"] == len(answer["output_ids"]) >= 1


def test_a_16_bit_png_is_read_as_the_bag_decoder_reads_it(images, tiny_dir, tmp_path, capsys):
    """One image, the same pixels, whichever entry point: a 16-bit PNG given to `ask` is scaled
    by 255/65535 as a mono16 message (it used to be clipped to white)."""
    logits = {}
    for name in ("grey16", "grey16_ros_rule", "grey16_clipped"):
        path = tmp_path / f"{name}.safetensors"
        rc, _, _ = run(capsys, *ask(tiny_dir, images / f"{name}.png", "--save-logits", path))
        assert rc == 0
        logits[name] = load_file(str(path))["logits"]
    assert torch.equal(logits["grey16"], logits["grey16_ros_rule"])
    assert not torch.equal(logits["grey16"], logits["grey16_clipped"])


# -------------------------------------------------------------------------------------------------
# spatialgeo convert: MoGe checkpoints and route (b)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from layouts import (
        dinov2_plain,
        source_model,
        write_clip_dir,
        write_llava_base,
        write_merged,
        write_moge,
        write_release,
    )

    from spatialgeo_core.config import tiny

    src = source_model(tiny(vocab_size=512))
    d = tmp_path_factory.mktemp("published")
    release, base_llm = write_release(d / "release", src)
    base = write_llava_base(d / "base", base_llm, src.clip_adapter.state_dict(), src.cfg)
    moge_layers = write_moge(d / "moge_layers.pt", src, 1)
    ckpt = torch.load(moge_layers, weights_only=True)
    ckpt["model_config"]["intermediate_layers"] = [1, 3, 4, 5]         # not the last four
    torch.save(ckpt, moge_layers)
    flat_v2 = d / "moge_v2_flat.pt"
    torch.save({"encoder.backbone." + k: v for k, v in dinov2_plain(src).items()}, flat_v2)
    return {"base": base, "release": release, "clip": write_clip_dir(d / "clip", src),
            "moge_layers": moge_layers, "flat_v2": flat_v2,
            "merged": write_merged(d / "merged", src)}


def test_moge_model_config_with_other_layers_is_refused(published, tmp_path, capsys):
    rc, _, err = run(capsys, "convert", "--llava", published["base"], "--release",
                     published["release"], "--moge", published["moge_layers"], "--clip",
                     published["clip"], "--out", tmp_path / "out")
    one_line_error(rc, err, "convert", "intermediate_layers [1, 3, 4, 5]", "last 4 blocks")
    assert not (tmp_path / "out").exists()


def test_a_flat_moge_v2_state_dict_gets_one_message_by_either_flag(published, tmp_path, capsys):
    lines = []
    for flag in ("--vit", "--moge"):
        rc, _, err = run(capsys, "convert", "--llava", published["base"], "--release",
                         published["release"], flag, published["flat_v2"], "--clip",
                         published["clip"], "--out", tmp_path / "out")
        lines.append(one_line_error(rc, err, "convert", "MoGe v2"))
    assert lines[0] == lines[1]


@pytest.mark.parametrize("tower", ["local_directory", "published_name", "other_name"])
def test_route_b_reads_the_clip_config_that_mm_vision_tower_names(tower, published, tmp_path,
                                                                  capsys):
    merged = tmp_path / "merged"
    shutil.copytree(published["merged"], merged)
    cfg = json.loads((merged / "config.json").read_text())
    cfg["mm_vision_tower"] = {"local_directory": str(published["clip"]),
                              "published_name": "openai/clip-vit-large-patch14-336",
                              "other_name": "openai/clip-vit-base-patch16"}[tower]
    (merged / "config.json").write_text(json.dumps(cfg))
    rc, out, err = run(capsys, "convert", "--llava", merged, "--out", tmp_path / "out")
    if tower == "local_directory":                     # the README's route (b), no --clip
        assert rc == 0 and "wrote" in out, err
    elif tower == "published_name":                    # its built-in ViT-L/14-336 config
        one_line_error(rc, err, "convert", "mm_hidden_size 32 != CLIP width 1024")
    else:
        one_line_error(rc, err, "convert", "openai/clip-vit-base-patch16", "--clip")


# -------------------------------------------------------------------------------------------------
# spatialgeo train


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from spatialgeo_core.training.smoke_dataset import write_tiny_dataset

    d = write_tiny_dataset(tmp_path_factory.mktemp("data"), num_image=8, num_text=0,
                           bad_records=False)
    conv = [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": "a red cube"}]
    (d / "all_skipped.json").write_text(json.dumps(
        [{"id": f"gone-{i}", "image": f"images/gone-{i}.png", "conversations": conv}
         for i in range(8)]))
    return d


def train(capsys, tiny_dir, data: Path, out: Path, *sets: str, json_name="pretrain.json",
          config: Path | None = None):
    return run(capsys, "train", "--config", config or CONFIGS / "tiny_stage1.yaml", "--set",
               f"init={tiny_dir}", f"output_dir={out}", f"data.json_path={data / json_name}",
               f"data.image_folder={data}", "run.progress_bar=false", "run.precision=fp32",
               "optim.max_steps=2", *sets)


def test_a_training_yaml_with_an_integer_key(tiny_dir, train_data, tmp_path, capsys):
    config = tmp_path / "int_key.yaml"
    config.write_text((CONFIGS / "tiny_stage1.yaml").read_text() + "1: one\nseeed: 3\n")
    rc, _, err = train(capsys, tiny_dir, train_data, tmp_path / "run", config=config)
    one_line_error(rc, err, "train", "unknown key(s) [1, 'seeed']")


def test_an_infinite_learning_rate_is_refused(tiny_dir, train_data, tmp_path, capsys):
    rc, _, err = train(capsys, tiny_dir, train_data, tmp_path / "run", "stage.lr.geo_adapter=.inf")
    one_line_error(rc, err, "train", "stage.lr.geo_adapter", "finite")
    assert not (tmp_path / "run").exists()


def _failed_without_export(out: Path, needle: str) -> None:
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed" and needle in status["error"]
    assert not (out / "export").exists()


def test_a_diverging_loss_fails_loudly(tiny_dir, train_data, tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, err = train(capsys, tiny_dir, train_data, out, "stage.lr.geo_adapter=1e30",
                            "optim.max_steps=4")
    one_line_error(rc, err, "train", "diverged", "nothing is exported")
    assert "finished" not in stdout
    _failed_without_export(out, "diverged")


def test_a_training_set_whose_every_record_is_skipped_fails_loudly(tiny_dir, train_data,
                                                                    tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, err = train(capsys, tiny_dir, train_data, out, json_name="all_skipped.json")
    one_line_error(rc, err, "train", "no step of the run saw a supervised token",
                   "missing_image 8")
    assert "finished" not in stdout
    _failed_without_export(out, "supervised token")


def test_ctrl_c_during_training_writes_a_checkpoint_and_says_so(tiny_dir, train_data, tmp_path,
                                                                capsys, monkeypatch):
    from spatialgeo_core.training import engine

    micro_step = engine._Trainer._micro_step
    calls = []

    def interrupted(self, *args, **kwargs):              # Ctrl-C during the first step
        if not calls:
            os.kill(os.getpid(), signal.SIGINT)
        calls.append(1)
        return micro_step(self, *args, **kwargs)

    out = tmp_path / "run"
    handler_before = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as m:
        m.setattr(engine._Trainer, "_micro_step", interrupted)
        rc, _, err = train(capsys, tiny_dir, train_data, out, "optim.max_steps=3")
    one_line_error(rc, err, "train", "interrupted", "step 1", "resumes", code=130)
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "paused" and status["step"] == 1
    assert (out / "checkpoints" / "step-00000001").is_dir()
    assert signal.getsignal(signal.SIGINT) is handler_before                # restored
    rc, stdout, _ = train(capsys, tiny_dir, train_data, out, "optim.max_steps=3")
    assert rc == 0 and stdout.startswith("finished: step 3/3")


# -------------------------------------------------------------------------------------------------
# spatialgeo eval-bag


@pytest.fixture(scope="module")
def bag_tools():
    pytest.importorskip("rosbags", reason="rosbags is in the [eval] extra")
    sys.path.insert(0, str(ROOT / "test" / "eval"))
    import test_eval_bag
    return test_eval_bag


def eval_bag(capsys, tiny_dir, bag: Path, questions: Path, out: Path, *extra):
    return run(capsys, "eval-bag", "--bag", bag, "--questions", questions, "--model-path",
               tiny_dir, "--out", out, "--no-progress", "--max-new-tokens", "2", *extra)


def bad_question_lines(t) -> list:
    """Three bad questions among good ones: each must become an error record."""
    return [
        t.question("good0", stamp_ns=t.START),
        t.question("subpixel", stamp_ns=t.START, regions=[{"box": [10, 10, 10.5, 10.5]},
                                                         {"box": t.BOX1}]),
        t.question("region5", stamp_ns=t.START + t.PERIOD,
                   question="Is Region [5] left of Region [0]?", category="left_predicate",
                   type="qualitative"),
        # 74 bytes of JSON that used to be decoded into a 1.6 GB mask when the file was read
        t.question("huge_rle", frame_index=2, regions=[
            {"mask_rle": {"size": [40000, 40000], "counts": "0"}}]),
        t.question("good1", frame_index=3),
    ]


def test_bad_questions_are_error_records_and_the_run_goes_on(bag_tools, tiny_dir, tmp_path,
                                                             capsys):
    t = bag_tools
    bag = t.write_bag(tmp_path / "bag")
    qfile = t.write_questions(tmp_path / "q.jsonl", bad_question_lines(t))
    out = tmp_path / "out"
    for argv in ((), ("--resume",)):                  # a resumed run gets past them too
        rc, stdout, err = eval_bag(capsys, tiny_dir, bag, qfile, out, *argv)
        assert rc == 0 and "Traceback" not in err, err
        assert "2 of 5 questions answered, 3 errors" in stdout
        res = t.results(out)
        assert res["good0"]["status"] == res["good1"]["status"] == "ok"
        assert res["subpixel"]["error_kind"] == "InvalidRegionError"
        assert "narrower than one pixel" in res["subpixel"]["error"]
        assert res["region5"]["error_kind"] == "InvalidRequestError"
        assert "Region [5]" in res["region5"]["error"]
        assert res["huge_rle"]["error_kind"] == "QuestionFormatError"
        assert MAX_IMAGE_PIXELS_ENV in res["huge_rle"]["error"]


def test_resume_refuses_another_bag_model_or_question(bag_tools, tiny_dir, tmp_path, capsys):
    t = bag_tools
    bag = t.write_bag(tmp_path / "bag")
    other_bag = t.write_bag(tmp_path / "other_bag", "mcap")       # same ids, other recording
    lines = [t.question("a", frame_index=0), t.question("b", frame_index=1)]
    qfile = t.write_questions(tmp_path / "q.jsonl", lines)
    out = tmp_path / "out"
    rc, _, _ = eval_bag(capsys, tiny_dir, bag, qfile, out)
    assert rc == 0
    before = (out / "results.jsonl").read_text()

    rc, _, err = eval_bag(capsys, tiny_dir, other_bag, qfile, out, "--resume")
    one_line_error(rc, err, "eval-bag", "--resume: the bag is not the one")
    other_model = model_variant(tiny_dir, tmp_path / "other_model", lambda c: c)
    (other_model / "model.safetensors").unlink()
    tensors = load_file(str(Path(tiny_dir) / "model.safetensors"))
    from safetensors.torch import save_file
    save_file({k: v + 1 for k, v in tensors.items()}, str(other_model / "model.safetensors"))
    rc, _, err = run(capsys, "eval-bag", "--bag", bag, "--questions", qfile, "--model-path",
                     other_model, "--out", out, "--no-progress", "--resume")
    one_line_error(rc, err, "eval-bag", "--resume: the model is not the one")
    changed = t.write_questions(tmp_path / "q2.jsonl",
                                [t.question("a", frame_index=1), t.question("b", frame_index=1)])
    rc, _, err = eval_bag(capsys, tiny_dir, bag, changed, out, "--resume")
    one_line_error(rc, err, "eval-bag", "1 answered question(s)", ": a;")
    assert (out / "results.jsonl").read_text() == before          # nothing reused or lost

    # the same inputs, a question added and a moved copy of the model: resumed
    added = t.write_questions(tmp_path / "q3.jsonl", [*lines, t.question("c", frame_index=2)])
    moved = tmp_path / "moved_model"
    shutil.copytree(tiny_dir, moved)
    rc, stdout, _ = eval_bag(capsys, moved, bag, added, out, "--resume")
    assert rc == 0 and "3 of 3 questions answered" in stdout


def test_ctrl_c_during_eval_bag_says_what_was_kept(bag_tools, tiny_dir, tmp_path, capsys,
                                                   monkeypatch):
    from spatialgeo_core.eval import runner

    t = bag_tools
    bag = t.write_bag(tmp_path / "bag")
    qfile = t.write_questions(tmp_path / "q.jsonl",
                              [t.question(f"q{i}", frame_index=i) for i in range(3)])
    out = tmp_path / "out"
    answer_match = runner._answer_match

    def interrupted_at_the_second(pipeline, match, *args):
        if match.question.id == "q1":
            raise KeyboardInterrupt
        return answer_match(pipeline, match, *args)

    with monkeypatch.context() as m:
        m.setattr(runner, "_answer_match", interrupted_at_the_second)
        rc, _, err = eval_bag(capsys, tiny_dir, bag, qfile, out)
    one_line_error(rc, err, "eval-bag", "interrupted", "1 results", "--resume", code=130)
    assert list(t.results(out)) == ["q0"]                          # kept
    rc, stdout, _ = eval_bag(capsys, tiny_dir, bag, qfile, out, "--resume")
    assert rc == 0 and "3 of 3 questions answered, 0 errors" in stdout


# -------------------------------------------------------------------------------------------------
# The corpus: every case of issue 16, how it ends, and the test that tries it through the CLI.
# (The corrupt-bag case lives with the other bag tests: test_eval_bag.py,
# test_corrupt_message_midway_keeps_the_results.)

CASES = {
    # tracebacks
    "196-megapixel PNG (ask)": ("exit 2", "test_ask_refuses_in_one_line[image_196_megapixels]"),
    "box narrower than a pixel (ask)":
        ("exit 2", "test_ask_refuses_in_one_line[box_narrower_than_a_pixel]"),
    "box narrower than a pixel (eval-bag, and --resume)":
        ("error record", "test_bad_questions_are_error_records_and_the_run_goes_on"),
    "config.json that is a list":
        ("exit 2", "test_ask_refuses_in_one_line[config_json_is_a_list]"),
    "string where a number belongs":
        ("exit 2", "test_ask_refuses_in_one_line[string_where_a_number_belongs]"),
    "patch_size: 0": ("exit 2", "test_ask_refuses_in_one_line[patch_size_zero]"),
    'format_version: "2"': ("exit 2", "test_ask_refuses_in_one_line[format_version_string]"),
    "--device tpu9": ("exit 2", "test_ask_refuses_in_one_line[device_tpu9]"),
    "demo --device bogus": ("exit 2", "test_demo_refuses_an_unknown_device"),
    "--temperature nan": ("exit 2", "test_ask_refuses_in_one_line[temperature_nan]"),
    "--save-logits to a directory": ("exit 2, answer printed",
                                     "test_save_logits_that_cannot_be_written_keeps_the_answer"
                                     "[a_directory]"),
    "--save-logits into a missing directory": (
        "exit 2, answer printed",
        "test_save_logits_that_cannot_be_written_keeps_the_answer[a_missing_directory]"),
    "training YAML with an integer key": ("exit 2", "test_a_training_yaml_with_an_integer_key"),
    # silently wrong
    "16-bit PNG (ask)": ("correct result",
                         "test_a_16_bit_png_is_read_as_the_bag_decoder_reads_it"),
    "Region [5] with two regions (ask)": ("exit 2",
                                          "test_ask_refuses_in_one_line[region_5_of_2]"),
    "Region [5] with two regions (eval-bag)":
        ("error record", "test_bad_questions_are_error_records_and_the_run_goes_on"),
    "--resume with another bag (or model, or changed question)":
        ("exit 2 refusal", "test_resume_refuses_another_bag_model_or_question"),
    "lr: .inf": ("exit 2 refusal", "test_an_infinite_learning_rate_is_refused"),
    "loss NaN": ("exit 2, status failed, no export", "test_a_diverging_loss_fails_loudly"),
    "every record skipped": ("exit 2, status failed, no export",
                             "test_a_training_set_whose_every_record_is_skipped_fails_loudly"),
    "MoGe model_config with other layers": (
        "exit 2 refusal", "test_moge_model_config_with_other_layers_is_refused"),
    # resources
    "12000x9000 PNG": ("exit 2", "test_ask_refuses_in_one_line[image_over_the_pixel_limit]"),
    "the pixel limit, configured": ("exit 2", "test_the_pixel_limit_is_configurable"),
    "40000x40000 RLE mask on a question line":
        ("error record", "test_bad_questions_are_error_records_and_the_run_goes_on"),
    "sqlite3 bag corrupt part-way": (
        "exit 2, every question recorded",
        "test_eval_bag.py::test_corrupt_message_midway_keeps_the_results"),
    # loading
    "convert route (b) without --clip": (
        "correct result / exit 2 naming --clip",
        "test_route_b_reads_the_clip_config_that_mm_vision_tower_names"),
    # interrupts
    "Ctrl-C in eval-bag": ("exit 130 with a message, --resume continues",
                           "test_ctrl_c_during_eval_bag_says_what_was_kept"),
    "Ctrl-C (SIGINT) in train": ("exit 130, checkpoint, message",
                                 "test_ctrl_c_during_training_writes_a_checkpoint_and_says_so"),
    # messages
    "flat MoGe v2 state dict via --vit / --moge": (
        "exit 2, one message", "test_a_flat_moge_v2_state_dict_gets_one_message_by_either_flag"),
}


def test_the_corpus_covers_every_case_of_the_issue():
    here = Path(__file__).read_text()
    bag_tests = (ROOT / "test" / "eval" / "test_eval_bag.py").read_text()
    for case, (_, test) in CASES.items():
        name = test.split("::")[-1].split("[")[0]
        assert f"def {name}(" in (bag_tests if "::" in test else here), case
        if "[" in test:
            param = test.split("[")[1].rstrip("]")
            assert f'"{param}"' in here, case
