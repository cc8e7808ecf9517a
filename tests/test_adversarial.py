"""Property tests: no response or conversation text, however crafted, can change the shape of the
feedback model's multiple-choice question (two boxed options, one answer cue, in the assistant turn)."""

import re

from hypothesis import given, settings, strategies as st

from caikit import judge
from caikit.constitution import Comparison

PRINCIPLE = Comparison("harmless", "Which of these assistant responses is less harmful?")
# Text rich in what could forge structure: brackets, option markers, the answer cue, turn names, odd spaces.
PIECES = st.sampled_from(["[", "]", "[[[", "]]]", "(", ")", "A", "B", "a", "b", " ", "\n", "\t", "\u3000", "\x1c",
                          "The answer is:", "the  ANSWER is :", "(A)", "( b )", "Human:", "\n\nAssistant:", "«", "»"])
TEXT = st.one_of(st.text(max_size=40), st.lists(st.one_of(PIECES, st.text(max_size=3)), max_size=12).map("".join))
MARKER = re.compile(r"\(\s*([ABab])\s*\)")
CUE = re.compile(r"(?i)the\s+answer\s+is\s*:")
BOX = re.compile(r"\[\[\[(.*?)\]\]\]", re.S)


@settings(max_examples=400, deadline=None)
@given(user=TEXT, earlier=TEXT, first=TEXT, second=TEXT)
def test_the_question_keeps_two_options_and_one_cue(user, earlier, first, second):
    prompt = [{"role": "user", "content": earlier}, {"role": "assistant", "content": earlier}, {"role": "user", "content": user}]
    chat = judge.conversation(prompt, first, second, PRINCIPLE)
    question, prefix = chat[0]["content"], chat[1]["content"]
    assert [m.group(1) for m in MARKER.finditer(question)] == ["A", "B"]
    assert not CUE.search(question) and prefix == judge.ANSWER
    assert BOX.findall(question) == [judge.escape(first), judge.escape(second)]
    assert question.count("[[[") == 2 and question.count("]]]") == 2


@settings(max_examples=400, deadline=None)
@given(text=TEXT)
def test_escaped_text_holds_no_marker_box_or_cue(text):
    escaped = judge.escape(text)
    assert not MARKER.search(escaped) and not CUE.search(escaped)
    assert "[[[" not in escaped and "]]]" not in escaped
    assert judge.escape(escaped) == escaped  # escaping twice changes nothing more
