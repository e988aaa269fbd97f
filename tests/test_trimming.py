"""The trimmed view references see: `reference_messages`."""

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from moa_graph import reference_messages
from moa_graph.prompts import REFERENCE_CONTINUE_PROMPT


def _pairs(view):
    return [(m.type, m.content) for m in view]


def test_drops_system_tool_results_and_tool_call_only_turns():
    view = reference_messages(
        [
            {"role": "system", "content": "huge system prompt"},
            {"role": "user", "content": "do the thing"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "tool result"},
            {"role": "assistant", "content": "here is my answer"},
            {"role": "user", "content": "thanks, now the next step"},
        ]
    )
    assert _pairs(view) == [
        ("human", "do the thing"),
        ("ai", "here is my answer"),
        ("human", "thanks, now the next step"),
    ]


def test_copies_no_tool_calls_from_assistant_turns_that_also_have_text():
    view = reference_messages(
        [
            HumanMessage("check the file"),
            AIMessage(
                content="Let me look.",
                tool_calls=[{"name": "read", "args": {"path": "a"}, "id": "c1"}],
            ),
            ToolMessage("file body", tool_call_id="c1"),
            HumanMessage("and?"),
        ]
    )
    assert _pairs(view) == [("human", "check the file"), ("ai", "Let me look."), ("human", "and?")]
    assert all(not getattr(m, "tool_calls", None) for m in view)


def test_flattens_content_parts_to_their_text():
    view = reference_messages(
        [
            HumanMessage(
                content=[
                    {"type": "text", "text": "What is in"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": "this picture?"},
                ]
            )
        ]
    )
    assert _pairs(view) == [("human", "What is in\nthis picture?")]


def test_view_ending_on_assistant_gets_a_user_instruction():
    view = reference_messages([HumanMessage("draft a plan"), AIMessage("1. do A 2. do B")])
    assert _pairs(view) == [
        ("human", "draft a plan"),
        ("ai", "1. do A 2. do B"),
        ("human", REFERENCE_CONTINUE_PROMPT),
    ]


def test_falls_back_to_last_user_message_when_nothing_is_left():
    # Only non-text user content: nothing survives flattening, so the user turn goes whole.
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    view = reference_messages([SystemMessage("sys"), HumanMessage(content=[image])])
    assert _pairs(view) == [("human", [image])]


def test_empty_when_there_is_no_user_message_at_all():
    assert reference_messages([SystemMessage("sys"), AIMessage("hello")]) == [
        AIMessage("hello"),
        HumanMessage(REFERENCE_CONTINUE_PROMPT),
    ]
    assert reference_messages([SystemMessage("only a system prompt")]) == []


def test_does_not_modify_the_input_messages():
    ai = AIMessage(content="text", tool_calls=[{"name": "f", "args": {}, "id": "c1"}])
    reference_messages([HumanMessage("q"), ai])
    assert ai.tool_calls and ai.content == "text"


def test_tool_activity_of_the_current_turn_is_rendered_for_mid_turn_reruns():
    big = "A" * 3000 + "B" * 3000
    conversation = [
        HumanMessage("earlier question"),
        AIMessage("", tool_calls=[{"name": "old", "args": {}, "id": "c0"}]),
        ToolMessage("old result", tool_call_id="c0", name="old"),
        AIMessage("earlier answer"),
        HumanMessage("read the log"),
        AIMessage(
            content="Reading it.",
            tool_calls=[{"name": "read_file", "args": {"path": "app.log"}, "id": "c1"}],
        ),
        ToolMessage(big, tool_call_id="c1", name="read_file"),
    ]
    view = reference_messages(conversation, tool_activity=True, tool_result_budget=100)

    assert _pairs(view)[:4] == [
        ("human", "earlier question"),
        ("ai", "earlier answer"),  # earlier turns' tool traffic stays out
        ("human", "read the log"),
        ("ai", 'Reading it.\n[called tool: read_file({"path": "app.log"})]'),
    ]
    result = view[4].content
    assert view[4].type == "human" and len(view) == 5
    assert result == (
        "[tool result read_file]\n" + "A" * 50 + "\n[... 5900 chars omitted ...]\n" + "B" * 50
    )


def test_without_tool_activity_the_default_view_is_unchanged():
    conversation = [
        HumanMessage("q"),
        AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "c1"}]),
        ToolMessage("r", tool_call_id="c1"),
    ]
    assert _pairs(reference_messages(conversation)) == [("human", "q")]
