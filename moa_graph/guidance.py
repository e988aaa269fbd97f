"""The guidance: the reference answers, labelled in preset order, for the aggregator's eyes only.

The guidance is ephemeral: it goes into the aggregator's input as its own user message and
is never written to `messages`. It sits where the conversation ended when the references
that produced it ran: after the turn's last human message and the tool rounds (an assistant
turn and its tool results) that came before that fan-out. Under `per_turn` that is right
after the human message, for the whole turn, so the prompt prefix stays byte-identical
through the tool loop and provider prompt caches hold. Under a re-running schedule
(`every_step`, `every_n:N`) a re-run's guidance follows the newest tool results and replaces
the previous guidance (which, never stored, is simply not sent again). So each aggregator
request starts with the whole of the previous one, less the previous guidance when the
references re-ran: under `every_step` that guidance ended the previous request; under
`every_n:N` the steps between re-runs keep the guidance in place and only extend the request.

The id in the tags of the quoted answers (`moa_graph.quoting.quote_answers`) is derived from
the answers and a secret of the process, so it too is the same for every call with the same
answers (which are quoted once, then looked up). A turn resumed in another process (a
restart, another worker) gets a new id once: its guidance, and the cached prefix from there
on, change at that call only. Processes that share `$MOA_GRAPH_QUOTING_SECRET`
(`moa_graph.quoting.QUOTING_SECRET_ENV_VAR`) share the id too.

The guidance text never says how old the advice is. Its place already shows which tool
calls came after it (as under `per_turn`), and a text that changed at a step that does not
re-run the references would break the cached prefix there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from moa_graph import prompts
from moa_graph.config import Preset
from moa_graph.privacy import model_text
from moa_graph.quoting import quote_answers
from moa_graph.state import Judgement, ReferenceAnswer, layer_answers
from moa_graph.trimming import last_human_index

__all__ = ["aggregator_input", "render_guidance"]


def render_guidance(
    preset: Preset,
    references: Sequence[ReferenceAnswer],
    *,
    raw: Mapping[str, str] | None = None,
    judgement: Judgement | None = None,
) -> str:
    """Render the guidance text for the aggregator from this turn's reference answers.

    Only the last layer's answers count. Successful answers are numbered from 1 in preset
    order, each quoted as data in a block whose tags carry an id no answer can know, and cut
    to the preset's `max_reference_chars` (`moa_graph.quoting`); the same answers give the
    same text within a process (and across processes that share
    `$MOA_GRAPH_QUOTING_SECRET`). Failed and skipped references are listed on one line (unless
    the preset's `degraded_reference_policy` is `silent`); when none answered, the
    aggregator is told to act alone, and when fewer than `min_references` did, that the
    advice is thin.

    Args:
        preset: The preset the references belong to.
        references: The turn's answers (any layers).
        raw: The originals of texts the privacy filter redacted for display.
        judgement: The judge's findings on the last layer (`moa_graph.judge`), if it ran.
    """
    ordered = layer_answers(references)
    answered = [ref for ref in ordered if ref["status"] == "ok"]
    # Cut to the limit again here: a person may have edited `references` (Studio).
    nonce, quoted = quote_answers(
        [(ref["label"], model_text(ref, raw)) for ref in answered],
        limit=preset.max_reference_chars,
        purpose="guidance",
    )
    header = prompts.GUIDANCE_HEADER.format(preset=preset.name, aggregator=preset.aggregator.label)
    blocks = [f"{header} {prompts.QUOTED_ANSWERS.format(id=nonce)}" if answered else header]
    blocks += [
        prompts.GUIDANCE_REFERENCE.format(number=number, label=ref["label"], text=block)
        for number, (ref, block) in enumerate(zip(answered, quoted, strict=True), start=1)
    ]
    if not answered:
        blocks.append(prompts.GUIDANCE_NONE_AVAILABLE)
    elif len(answered) < preset.min_references:
        blocks.append(
            prompts.GUIDANCE_THIN.format(
                ok=len(answered), total=len(ordered), wanted=preset.min_references
            )
        )
    unavailable = [f"{ref['label']} ({ref['status']})" for ref in ordered if ref["status"] != "ok"]
    if unavailable and preset.degraded_reference_policy == "loud":
        blocks.append(prompts.GUIDANCE_UNAVAILABLE.format(items=", ".join(unavailable)))
    if judgement is not None and answered:
        blocks.append(_judged(preset, judgement))
    return "\n\n".join(blocks)


def _judged(preset: Preset, judgement: Judgement) -> str:
    """The judge's block of the guidance: its findings quoted as data, or that it failed."""
    if judgement["status"] != "ok":
        reason = judgement.get("reason", prompts.JUDGE_CALL_FAILED)
        return prompts.GUIDANCE_JUDGE_FAILED.format(label=judgement["label"], reason=reason)
    missed = judgement.get("missed") or {}
    findings = prompts.JUDGE_FINDINGS.format(
        ranking=", ".join(judgement.get("ranking") or []) or "-",
        consensus="; ".join(judgement.get("consensus") or []) or "-",
        contradictions="; ".join(judgement.get("contradictions") or []) or "-",
        missed="; ".join(f"{label}: {text}" for label, text in missed.items()) or "-",
    )
    nonce, (block,) = quote_answers(
        [(judgement["label"], findings)], limit=preset.max_reference_chars, purpose="judgement"
    )
    return prompts.GUIDANCE_JUDGE.format(
        quoting=prompts.QUOTED_ANSWERS.format(id=nonce), findings=block
    )


def aggregator_input(
    messages: Sequence[BaseMessage], guidance: str | None, *, step: int = 1
) -> list[BaseMessage]:
    """The aggregator's input: the full conversation with the guidance where it was made.

    The guidance goes after the turn's last human message and the turn's first `step - 1`
    tool rounds: where the conversation ended when the references ran for aggregator step
    `step` (at the end, if the conversation has not got that far). It never separates an
    assistant turn's tool calls from their results. With no guidance (a disabled preset),
    the conversation is returned unmodified.

    Args:
        messages: The conversation, as stored.
        guidance: The rendered guidance, or None.
        step: The aggregator step (1-based, within the turn) the references ran for.
    """
    if guidance is None:
        return list(messages)
    cut = _after_tool_rounds(messages, step - 1)
    return [*messages[:cut], HumanMessage(content=guidance), *messages[cut:]]


def _after_tool_rounds(messages: Sequence[BaseMessage], rounds: int) -> int:
    """Index just past the turn's last human message and the turn's first `rounds` tool rounds."""
    at = last_human_index(messages)
    cut = len(messages) if at is None else at + 1
    while rounds and cut < len(messages):
        if isinstance(messages[cut], AIMessage):
            rounds -= 1
            cut += 1
            # A round ends with its tool results: calls and results stay together.
            while cut < len(messages) and isinstance(messages[cut], ToolMessage):
                cut += 1
        else:
            cut += 1
    return cut
