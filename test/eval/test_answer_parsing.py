"""Answer phrasings -> meters / clock hours / yes-no / chosen region, parsed by rules."""
import pytest

from spatialgeo_core.answer_parsing import (
    category_kind,
    parse_choice,
    parse_clock_hours,
    parse_distance_m,
    parse_metric_value,
    parse_predicate,
)

IN, FT, YD = 0.0254, 0.3048, 0.9144

DISTANCES = [
    # plain numbers with units, as the bench's reference answers word them
    ("Region [0] and Region [1] are 11.4 meters apart.", 11.4),
    ("22.32 feet.", 22.32 * FT),
    ("It is 48.47 centimeters.", 0.4847),
    ("Region [0] is 77.56 centimeters wide.", 0.7756),
    ("The height of Region [1] is 10.0 inches.", 10 * IN),
    ("It is 35.9 inches wide.", 35.9 * IN),
    ("The width of Region [0] is 1.02 meters.", 1.02),
    ("2m", 2.0),
    ("1.5m.", 1.5),
    ("850 mm", 0.85),
    ("The distance is 3.2 km", 3200.0),
    ("3 yards", 3 * YD),
    ("approximately 10 ft.", 10 * FT),
    ("About 2.5 metres away", 2.5),
    ("roughly 7 m", 7.0),
    ("It is 20 in wide", 20 * IN),
    ('a 12" ruler', 12 * IN),
    ("a 6-foot ladder", 6 * FT),
    # compounds
    ("3 feet 2 inches", 3 * FT + 2 * IN),
    ("5'10\"", 5 * FT + 10 * IN),
    ("5\u201910\u201d", 5 * FT + 10 * IN),
    ("5'10", 5 * FT + 10 * IN),
    ("five foot ten", 5 * FT + 10 * IN),
    ("6 ft, 2 in", 6 * FT + 2 * IN),
    ("1 m 20 cm", 1.2),
    ("1 meter and 5 centimeters", 1.05),
    # number words
    ("one and a half meters", 1.5),
    ("two point five meters", 2.5),
    ("a meter", 1.0),
    ("half a meter", 0.5),
    ("a meter and a half", 1.5),
    ("twelve feet", 12 * FT),
    ("twenty-three inches", 23 * IN),
    ("a couple of meters", 2.0),
    ("one hundred and five centimeters", 1.05),
    ("Three meters apart", 3.0),
    ("1 1/2 feet", 1.5 * FT),
    # decimal commas, thousands separators
    ("1,5 m", 1.5),
    ("1,500 mm", 1.5),
    # ranges -> midpoint
    ("2 to 3 meters", 2.5),
    ("2-3 m", 2.5),
    ("between 2 and 3 meters", 2.5),
    ("2 m to 3 m", 2.5),
    ("between 2 m and 3 m", 2.5),
    # several quantities: the first complete one
    ("1.5 meters (about 5 feet)", 1.5),
    ("It is 2 meters tall and 3 meters wide.", 2.0),
    # region indices never count as numbers
    ("Region [2] is 4 feet from Region [1].", 4 * FT),
    ("There is no vertical gap, as Region [1] is directly beneath Region [0].", 0.0),
    # nothing to read
    ("42", None),
    ("It is about 3.", None),
    ("Region [0] is 2 in front of Region [1]", None),
    ("I cannot tell the distance.", None),
    ("asdf qwerty", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "meters"), DISTANCES)
def test_parse_distance_m(text, meters):
    got = parse_distance_m(text)
    if meters is None:
        assert got is None
    else:
        assert got == pytest.approx(meters, rel=1e-9)


@pytest.mark.parametrize(("text", "unit", "meters"), [
    ("42", "cm", 0.42),
    ("It is about 3.", "m", 3.0),
    ("2 to 4", "ft", 3 * FT),
    ("5 meters", "cm", 5.0),           # a unit in the text wins over the default
    ("no numbers here", "m", None),
])
def test_parse_distance_default_unit(text, unit, meters):
    got = parse_distance_m(text, default_unit=unit)
    assert got == (None if meters is None else pytest.approx(meters))


def test_parse_distance_rejects_unknown_default_unit():
    with pytest.raises(ValueError, match="default_unit"):
        parse_distance_m("3", default_unit="parsec")


CLOCKS = [
    ("at 3 o'clock", 3.0),
    ("3 o\u2019clock", 3.0),
    ("three o'clock", 3.0),
    ("Region [1] is roughly at 12 o'clock from Region [0].", 12.0),
    ("Region [0] will find Region [1] around the 2 o'clock direction.", 2.0),
    ("around the eleven o'clock direction", 11.0),
    ("at 3 o clock", 3.0),
    ("10:30", 10.5),
    ("0 o'clock", 12.0),
    ("In clock terms it is at 12", 12.0),
    ("Thinking of a clock, region [1] is in the 9 direction", 9.0),
    ("It is at 12.", None),            # no clock context
    ("13 o'clock", None),
    ("no idea", None),
]


@pytest.mark.parametrize(("text", "hours"), CLOCKS)
def test_parse_clock_hours(text, hours):
    assert parse_clock_hours(text) == hours


Q_LEFT = "Is Region [0] to the left of Region [1] from the viewer's perspective?"
Q_TALL = "Is Region [0] taller than Region [1]?"
Q_SHORT = "Is Region [0] shorter than Region [1]?"
Q_BEHIND = "Is Region [0] behind Region [1]?"
Q_WIDE = "Is Region [0] wider than Region [1]?"
Q_THIN = "Is Region [0] thinner than Region [1]?"
Q_BELOW = "Is Region [0] below Region [1]?"
Q_BIG = "Is Region [0] bigger than Region [1]?"
Q_FRONT = "Is Region [0] in front of Region [1]?"

PREDICATES = [
    # the reference scorer's left_predicate examples
    ("Yes, Region [0] is to the left of Region [1].", "left_predicate", Q_LEFT, True),
    ("Indeed, Region [0] is positioned on the left side of Region [1].", "left_predicate", Q_LEFT,
     True),
    ("Correct, you'll find Region [0] to the left of Region [1].", "left_predicate", Q_LEFT, True),
    ("In fact, Region [0] is to the right of Region [1].", "left_predicate", Q_LEFT, False),
    ("Incorrect, Region [0] is not on the left side of Region [1].", "left_predicate", Q_LEFT,
     False),
    # bare statements, negations, opposites, swapped subjects
    ("Region [0] is to the left of Region [1].", "left_predicate", Q_LEFT, True),
    ("Region [0] isn't to the left of Region [1].", "left_predicate", Q_LEFT, False),
    ("Region [0] is not to the right of Region [1].", "left_predicate", Q_LEFT, True),
    ("Region [1] is to the left of Region [0].", "left_predicate", Q_LEFT, False),
    ("Region [1] is to the right of Region [0].", "left_predicate", Q_LEFT, True),
    ("Region [0] and Region [1] are horizontally aligned.", "left_predicate", Q_LEFT, False),
    ("Correct, Region [0] is not as tall as Region [1].", "short_predicate", Q_SHORT, True),
    ("Region [0] is not as tall as Region [1].", "short_predicate", Q_SHORT, True),
    ("Region [0] is as tall as Region [1].", "tall_predicate", Q_TALL, False),
    ("In fact, Region [0] may be shorter than Region [1].", "tall_predicate", Q_TALL, False),
    ("Region [0]'s height is not larger of Region [1]'s.", "tall_predicate", Q_TALL, False),
    ("Region [0]'s height does not fall short of Region [1]'s.", "short_predicate", Q_SHORT,
     False),
    ("The width of Region [0] exceeds that of Region [1].", "wide_predicate", Q_WIDE, True),
    ("Region [0]'s width does not surpass Region [1]'s.", "wide_predicate", Q_WIDE, False),
    ("In fact, Region [0] might be narrower than Region [1].", "wide_predicate", Q_WIDE, False),
    ("Region [0]'s width is less than Region [1]'s.", "thin_predicate", Q_THIN, True),
    ("Region [1] is wider than Region [0].", "thin_predicate", Q_THIN, True),
    ("Actually, Region [0] is above Region [1].", "below_predicate", Q_BELOW, False),
    ("Region [0] is positioned under Region [1].", "below_predicate", Q_BELOW, True),
    ("Region [0] occupies less space than Region [1].", "big_predicate", Q_BIG, False),
    ("Actually, Region [0] might be larger than Region [1].", "big_predicate", Q_BIG, True),
    ("Region [0] is closer to the viewer.", "behind_predicate", Q_BEHIND, False),
    ("Region [1] is in front of Region [0].", "behind_predicate", Q_BEHIND, True),
    ("Region [0] is further from the camera than Region [1].", "front_predicate", Q_FRONT, False),
    ("That is True.", "front_predicate", Q_FRONT, True),
    ("That is False.", "behind_predicate", Q_BEHIND, False),
    ("No.", "behind_predicate", Q_BEHIND, False),
    ("Yes, it is.", "behind_predicate", Q_BEHIND, True),
    ("Nope, it isn't.", "tall_predicate", Q_TALL, False),
    ("I think yes.", "wide_predicate", Q_WIDE, True),
    ("The answer is no.", "thin_predicate", Q_THIN, False),
    ("No doubt Region [0] is to the left of Region [1].", "left_predicate", Q_LEFT, True),
    # the leading word decides (the reference data labels this a "no")
    ("No, Region [1] is in front of Region [0].", "behind_predicate", Q_BEHIND, False),
    # cannot tell
    ("It is hard to say.", "left_predicate", Q_LEFT, None),
    ("", "tall_predicate", Q_TALL, None),
]


@pytest.mark.parametrize(("text", "category", "question", "expected"), PREDICATES)
def test_parse_predicate(text, category, question, expected):
    assert parse_predicate(text, category, question) is expected


def test_parse_predicate_without_question_takes_subject_as_a():
    assert parse_predicate("Region [1] is to the right of Region [0].", "left_predicate") is False
    assert parse_predicate("Region [0] is to the left of Region [1].", "left_predicate") is True


def test_parse_predicate_rejects_other_categories():
    with pytest.raises(ValueError, match="_predicate"):
        parse_predicate("yes", "left_choice")
    with pytest.raises(ValueError, match="unknown"):
        parse_predicate("yes", "sideways_predicate")


CHOICES = [
    ("Who is taller, Region [0] or Region [1]?", "With more height is Region [0].", "Region [0]"),
    ("Who is taller, Region [0] or Region [1]?", "Standing taller between the two is Region [1].",
     "Region [1]"),
    ("Between Region [0] and Region [1], which one appears on the right side from the viewer's "
     "perspective?", "From the viewer's perspective, Region [1] appears more on the right side.",
     "Region [1]"),
    ("Between Region [0] and Region [1], which one appears on the right side from the viewer's "
     "perspective?", "Region [1].", "Region [1]"),
    ("Which is in front, Region [0] or Region [1]?", "Positioned in front is Region [1].",
     "Region [1]"),
    ("Which is in front, Region [0] or Region [1]?", "Region [0] is behind Region [1].",
     "Region [1]"),
    ("Which is above, Region [0] or Region [1]?", "Region [0] is higher up.", "Region [0]"),
    ("Which is above, Region [0] or Region [1]?", "Region [1] sits under Region [0].",
     "Region [0]"),
    ("Who is taller, Region [0] or Region [1]?", "Region [0] is shorter than Region [1].",
     "Region [1]"),
    ("Who is taller, Region [0] or Region [1]?", "Region [1] is not as tall as Region [0].",
     "Region [0]"),
    ("Who is taller, Region [0] or Region [1]?", "The first one.", "Region [0]"),
    ("Who is taller, Region [0] or Region [1]?", "Region [1], not Region [0].", "Region [1]"),
    ("Who is taller, Region [0] or Region [1]?", "They are about the same height.", None),
    ("Who is taller, Region [0] or Region [1]?", "I don't know.", None),
    ("Which is taller, the chair or the lamp?", "The lamp is taller.", "lamp"),
    ("Which is taller, the chair or the lamp?", "The chair is shorter than the lamp.", "lamp"),
    ("Between the red box and the table, which one is positioned higher?", "The red box.",
     "red box"),
    # off topic: another relation than the one asked is no answer (as for a predicate)
    ("Between Region [0] and Region [1], which one is broader?", "Region [1] is shorter.", None),
    ("Which is more to the left, Region [0] or Region [1]?", "Region [0] is closer to the camera.",
     None),
    ("Which is wider, Region [0] or Region [1]?", "Region [1] is taller and wider.", "Region [1]"),
]


@pytest.mark.parametrize(("question", "text", "expected"), CHOICES)
def test_parse_choice(question, text, expected):
    assert parse_choice(text, question) == expected


def test_parse_choice_category_overrides_the_question():
    q = "Which one, Region [0] or Region [1]?"    # the relation is only in the category
    answer = "Region [0] is to the right of Region [1]."
    assert parse_choice(answer, q, "left_choice") == "Region [1]"
    with pytest.raises(ValueError, match="_choice"):
        parse_choice("Region [0]", q, "left_predicate")


@pytest.mark.parametrize(("text", "expected"), [
    ("Region [1] is roughly at 3 o'clock from Region [0].", (3.0, "o'clock")),
    ("It is 2 meters away.", (2.0, "m")),
    ("About 30 cm.", (0.3, "m")),
    ("10:30", (10.5, "o'clock")),
    ("Yes, it is.", None),
    ("", None),
])
def test_parse_metric_value(text, expected):
    got = parse_metric_value(text)
    if expected is None:
        assert got is None
    else:
        assert got[1] == expected[1]
        assert got[0] == pytest.approx(expected[0])


@pytest.mark.parametrize(("category", "kind"), [
    ("left_predicate", "predicate"), ("thin_choice", "choice"), ("width_data", "distance"),
    ("direction", "direction"),
])
def test_category_kind(category, kind):
    assert category_kind(category) == kind


# ------------------------------------------------------------------------------------------
# Answers that state each region's facts, then conclude: the conclusion is read

FACTS_LEFT = ("Region [0]: 0.4 m right. Region [1]: 1.2 m right. "
              "So Region [0] is to the left of Region [1].")
CONCLUSIONS = [
    # (answer, category, question, expected)
    (FACTS_LEFT, "left_predicate", Q_LEFT, True),
    (FACTS_LEFT, "right_predicate", "Is Region [0] to the right of Region [1]?", False),
    (FACTS_LEFT, "left_choice", "Which is more to the left, Region [0] or Region [1]?",
     "Region [0]"),
    (FACTS_LEFT, "right_choice", "Which is more to the right, Region [0] or Region [1]?",
     "Region [1]"),
    ("Region [0]: 3.1 m ahead. Region [1]: 4.6 m ahead. So Region [0] is in front of Region [1].",
     "behind_predicate", Q_BEHIND, False),
    ("Region [0]: 0.9 m tall. Region [1]: 0.5 m tall. So Region [0] is taller than Region [1].",
     "short_choice", "Which is shorter, Region [0] or Region [1]?", "Region [1]"),
    ("Region [0]: 0.35 cubic metres. Region [1]: 1.20 cubic metres. So Region [0] is smaller "
     "than Region [1].", "big_predicate", Q_BIG, False),
    # a claim after the conclusion that does not speak of the relation leaves it deciding
    ("Region [0] is taller. Region [1] is red.", "tall_choice",
     "Which is taller, Region [0] or Region [1]?", "Region [0]"),
    # the last claim decides over the leading word of an earlier one
    ("Yes. So Region [0] is to the right of Region [1].", "left_predicate", Q_LEFT, False),
    # facts with no conclusion are no answer to a comparison
    ("Region [0]: 0.4 m left. Region [1]: 1.2 m right.", "left_predicate", Q_LEFT, None),
    ("Region [0]: 0.4 m left. Region [1]: 1.2 m right. So", "left_choice",
     "Which is more to the left, Region [0] or Region [1]?", None),
]


@pytest.mark.parametrize(("text", "category", "question", "expected"), CONCLUSIONS)
def test_the_conclusion_is_read_not_the_facts(text, category, question, expected):
    if category_kind(category) == "predicate":
        assert parse_predicate(text, category, question) is expected
    else:
        assert parse_choice(text, question, category) == expected


@pytest.mark.parametrize(("text", "meters"), [
    ("Region [0]: 3.2 m ahead, 0.4 m left, 0.6 m up. Region [1]: 4.1 m ahead, 1.2 m right, "
     "0.5 m up. So they are 1.8 m apart.", 1.8),
    ("Region [0]: 0.6 m up. Region [1]: 1.1 m up. So they are 0.5 m apart vertically.", 0.5),
    ("The distance is 2 m. That is quite far.", 2.0),        # the last claim with a length
    ("Region [0]: 0.8 m wide.", 0.8),                         # facts alone are read as a whole
    ("Region [0]: 3.2 m ahead. Region [1]: 4.1 m ahead. So they are", None),
])
def test_a_length_is_read_at_the_conclusion(text, meters):
    assert parse_distance_m(text) == (None if meters is None else pytest.approx(meters))


def test_the_metric_value_is_the_conclusions():
    assert parse_metric_value(FACTS_LEFT) is None             # a comparison states no value
    value, unit = parse_metric_value(
        "Region [0]: 3.2 m ahead, 0.4 m left. Region [1]: 4.0 m ahead, 0.9 m right. "
        "So Region [1] is at 2 o'clock from Region [0].")
    assert (value, unit) == (2.0, "o'clock")
    assert parse_clock_hours("Region [0]: 3.2 m ahead. Region [1]: 4 m ahead. "
                             "So Region [1] is at 12 o'clock from Region [0].") == 12.0
