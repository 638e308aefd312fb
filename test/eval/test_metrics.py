"""SpatialRGPT-Bench metrics against hand-computed values; judge mode against a local server."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spatialgeo_core.eval.metrics import (
    ItemScore,
    JudgeConfig,
    aggregate,
    score_item,
    score_records,
)

Q_DIST = "How far is Region [0] from Region [1]?"
Q_DIR = "If you are at Region [0], where will you find Region [1]?"
Q_LEFT = "Is Region [0] to the left of Region [1]?"
Q_TALLER = "Who is taller, Region [0] or Region [1]?"
EPS = 1e-4


def test_distance_success_band_is_inclusive_and_error_is_relative():
    ref = "Region [0] and Region [1] are 4 meters apart."
    low = score_item("distance_data", Q_DIST, "3 meters", ref)           # 0.75 * 4
    high = score_item("distance_data", Q_DIST, "5 meters", ref)          # 1.25 * 4
    below = score_item("distance_data", Q_DIST, "2.99 meters", ref)
    above = score_item("distance_data", Q_DIST, "16.5 feet", ref)        # 5.0292 m
    assert (low.success, high.success, below.success, above.success) == (True, True, False, False)
    assert low.error == pytest.approx(1.0 / (4.0 + EPS))
    assert above.prediction_value == pytest.approx(16.5 * 0.3048)
    assert above.error == pytest.approx((16.5 * 0.3048 - 4.0) / (4.0 + EPS))


def test_quantitative_aggregate_hand_computed():
    items = [
        ("width_data", "It is 2.4 m.", "The width of Region [0] is 2 meters."),        # ok, 0.4
        ("width_data", "3 m", "Region [0] is 2 meters wide."),                          # no, 1.0
        ("width_data", "no idea", "Region [0] is 2 meters in width."),                  # unread
        ("height_data", "100 cm", "The height of Region [0] is 1.0 meters."),           # ok, 0
    ]
    scores = [score_item(c, "How big is Region [0]?", p, r) for c, p, r in items]
    m = aggregate(scores)
    width = m["quantitative"]["categories"]["width_data"]
    assert width["success_pct"] == pytest.approx(100 / 3)
    assert width["abs_rel"] == pytest.approx((0.4 / (2 + EPS) + 1.0 / (2 + EPS)) / 2)
    assert (width["total"], width["parsed"], width["parse_failures"]) == (3, 2, 1)
    assert width["delta_1.25_pct"] == pytest.approx(50.0)          # 2.4/2 = 1.2 < 1.25; 1.5 not
    height = m["quantitative"]["categories"]["height_data"]
    assert height["success_pct"] == 100.0 and height["abs_rel"] == pytest.approx(0.0)
    overall = m["quantitative"]["overall"]
    assert overall["success_pct"] == pytest.approx(50.0)
    assert overall["abs_rel"] == pytest.approx((0.4 / (2 + EPS) + 1.0 / (2 + EPS) + 0.0) / 3)
    assert m["parse_failures"] == 1 and m["reference_parse_failures"] == 0
    assert set(m["quantitative"]["categories"]) == {"width_data", "height_data"}


def test_direction_aggregate_hand_computed():
    items = [
        ("at 1 o'clock", "Region [1] is roughly at 12 o'clock from Region [0]."),   # 1 h, ok
        ("9 o'clock", "Region [0] will find Region [1] around the 3 o'clock direction."),  # 6 h
        ("1 o'clock", "Region [1] is roughly at 11 o'clock from Region [0]."),      # 2 h
        ("somewhere over there", "Region [1] is roughly at 5 o'clock from Region [0]."),
    ]
    scores = [score_item("direction", Q_DIR, p, r) for p, r in items]
    assert [s.error for s in scores] == [1.0, 6.0, 2.0, None]
    d = aggregate(scores)["direction"]
    assert d["success_pct"] == pytest.approx(25.0)
    assert d["mean_error_hours"] == pytest.approx(3.0)
    assert d["mean_error_deg"] == pytest.approx(90.0)
    assert (d["total"], d["parsed"], d["parse_failures"]) == (4, 3, 1)


def test_qualitative_groups_micro_and_macro_accuracy():
    scores = [
        score_item("left_predicate", Q_LEFT, "Yes.",
                   "Yes, Region [0] is to the left of Region [1]."),
        score_item("right_predicate", "Is Region [0] to the right of Region [1]?",
                   "Region [0] is to the right of Region [1].",
                   "In fact, Region [0] is to the left of Region [1]."),
        score_item("left_predicate", Q_LEFT, "Hmm.",
                   "No, Region [0] is not to the left of Region [1]."),
        score_item("tall_choice", Q_TALLER, "Region [1] is taller.", "Region [1] is taller."),
    ]
    assert [s.success for s in scores] == [True, False, False, True]
    assert [s.group for s in scores] == ["left/right", "left/right", "left/right", "tall/short"]
    q = aggregate(scores)["qualitative"]
    assert q["groups"]["left/right"]["accuracy_pct"] == pytest.approx(100 / 3)
    assert q["groups"]["left/right"]["parse_failures"] == 1
    assert q["groups"]["tall/short"]["accuracy_pct"] == 100.0
    assert q["overall"]["accuracy_pct"] == pytest.approx(50.0)
    assert q["overall"]["mean_group_accuracy_pct"] == pytest.approx((100 / 3 + 100) / 2)
    assert q["categories"]["right_predicate"] == {"accuracy_pct": 0.0, "correct": 0, "total": 1,
                                                  "parse_failures": 0}


def test_unreadable_reference_is_counted_and_unsuccessful():
    s = score_item("distance_data", Q_DIST, "2 m", "They overlap, so it is hard to tell.")
    assert not s.success and not s.reference_parsed and not s.parsed
    assert aggregate([s])["reference_parse_failures"] == 1


def test_aggregate_is_json_serialisable_and_handles_no_items():
    m = aggregate([])
    json.dumps(m)
    assert m["num_items"] == 0
    assert m["qualitative"]["overall"]["accuracy_pct"] is None
    assert m["direction"]["success_pct"] is None
    s = score_item("distance_data", Q_DIST, "2 m", "2 meters")
    json.dumps(aggregate([s]))
    json.dumps(s.to_dict())


def test_unknown_category_raises():
    with pytest.raises(ValueError, match="unknown"):
        score_item("depth_data", Q_DIST, "2 m", "2 m")


def test_default_unit_for_bare_numbers():
    assert not score_item("distance_data", Q_DIST, "2", "2 meters").parsed
    assert score_item("distance_data", Q_DIST, "2", "2 meters", default_unit="m").success


def test_score_records_reads_generator_records():
    records = [{"question": Q_LEFT, "pred": "Yes", "gt": "Yes, it is.",
                "qa_info": {"type": "qualitative", "category": "left_predicate"}},
               {"question": Q_DIST, "pred": "7 ft", "gt": "2 meters",
                "qa_info": {"type": "quantitative", "category": "distance_data"}}]
    scores = score_records(records)
    assert all(isinstance(s, ItemScore) for s in scores)
    assert [s.success for s in scores] == [True, True]       # 7 ft = 2.1336 m
    with pytest.raises(ValueError, match="record 0"):
        score_records([{"question": "q"}])


# ------------------------------------------------------------------------------------------------
# Judge mode, against a server on 127.0.0.1 started here


class _JudgeHandler(BaseHTTPRequestHandler):
    replies: list = []            # per request: a dict (JSON content), "500", "garbage" or "sleep"
    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body,
                                    "auth": self.headers.get("Authorization")})
        reply = type(self).replies.pop(0)
        if reply == "sleep":
            time.sleep(0.6)
            reply = {"your_mark": 1}
        if reply == "500":
            self.send_response(500)
            self.end_headers()
            return
        content = "not json" if reply == "garbage" else json.dumps(reply)
        data = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass                      # the timeout test hangs up on purpose; no traceback on stderr


@pytest.fixture
def judge_server():
    _JudgeHandler.replies, _JudgeHandler.requests = [], []
    server = _QuietServer(("127.0.0.1", 0), _JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _cfg(server, timeout_s=5.0):
    return JudgeConfig(judge_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
                       model="tiny-judge", api_key="k-123", timeout_s=timeout_s)


def test_judge_scores_and_never_reuses_a_previous_mark(judge_server):
    _JudgeHandler.replies = [
        {"your_mark": 1},
        "500",
        "garbage",
        {"your_mark": 7},
        {"answer_in_meters": 2.0, "response_in_meters": 2.4},
        {"answer_direction": 12, "response_direction": 1},
    ]
    cfg = _cfg(judge_server)
    question = "Is Region [0] {left} of Region [1]?"     # braces must reach the judge verbatim
    first = score_item("left_predicate", question, "yes", "Yes.", judge=cfg)
    failed = [score_item("left_predicate", question, "yes", "Yes.", judge=cfg) for _ in range(3)]
    dist = score_item("distance_data", Q_DIST, "2.4 m", "2 m", judge=cfg)
    direc = score_item("direction", Q_DIR, "1 o'clock", "12 o'clock", judge=cfg)

    assert first.success and first.source == "judge"
    assert [f.success for f in failed] == [False, False, False]
    assert all(f.judge_failed and not f.parsed for f in failed)
    assert dist.success and dist.error == pytest.approx(0.4 / (2 + EPS))
    assert direc.success and direc.error == 1.0
    m = aggregate([first, *failed, dist, direc])
    assert m["judge_failures"] == 3 and m["reference_parse_failures"] == 0
    assert m["qualitative"]["overall"]["accuracy_pct"] == pytest.approx(25.0)

    req = _JudgeHandler.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == "Bearer k-123"
    assert req["body"]["model"] == "tiny-judge"
    assert "Question: Is Region [0] {left} of Region [1]?" in req["body"]["messages"][1]["content"]


def test_judge_timeout_is_a_failure(judge_server):
    _JudgeHandler.replies = ["sleep"]
    s = score_item("left_predicate", Q_LEFT, "yes", "Yes.", judge=_cfg(judge_server, 0.2))
    assert s.judge_failed and not s.success


def test_judge_config_is_validated():
    with pytest.raises(ValueError, match="judge_url"):
        JudgeConfig(judge_url="ftp://127.0.0.1/v1", model="m")
    with pytest.raises(ValueError, match="timeout_s"):
        JudgeConfig(judge_url="http://127.0.0.1:1/v1", model="m", timeout_s=0)
