"""The guidance: the reference answers, labelled in preset order, for the aggregator's eyes only.

The guidance is ephemeral. It goes into the aggregator's input as its own user message
right after the turn's last human message and is never written to `messages`, so the
prompt prefix stays byte-identical through the tool loop and provider prompt caches hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from langchain_core.messages import BaseMessage, HumanMessage

from moa_graph import prompts
from moa_graph.config import Preset
from moa_graph.privacy import model_text
from moa_graph.state import ReferenceAnswer
from moa_graph.trimming import last_human_index

__all__ = ["aggregator_input", "quote_reference", "render_guidance"]

_BLOCK_TAG = re.compile(r"<(\s*/?\s*reference\b)", re.IGNORECASE)


def render_guidance(
    preset: Preset,
    references: Sequence[ReferenceAnswer],
    *,
    raw: Mapping[str, str] | None = None,
    stale: bool = False,
) -> str:
    """Render the guidance text for the aggregator from this turn's reference answers.

    Only the last layer's answers count. Successful answers are numbered from 1 in preset
    order; failed and skipped references are listed on one line (unless the preset's
    `degraded_reference_policy` is `silent`); when none answered, the aggregator is told to
    act alone, and when fewer than `min_references` did, that the advice is thin.

    Args:
        preset: The preset the references belong to.
        references: The turn's answers (any layers).
        raw: The originals of texts the privacy filter redacted for display.
        stale: The advice predates tool calls now in the conversation.
    """
    blocks = [
        prompts.GUIDANCE_HEADER.format(preset=preset.name, aggregator=preset.aggregator.label)
    ]
    last = max((ref.get("layer", 1) for ref in references), default=1)
    ordered = sorted(
        (ref for ref in references if ref.get("layer", 1) == last), key=lambda ref: ref["index"]
    )
    answered = [ref for ref in ordered if ref["status"] == "ok"]
    blocks += [
        prompts.GUIDANCE_REFERENCE.format(
            number=number, label=ref["label"], text=quote_reference(model_text(ref, raw))
        )
        for number, ref in enumerate(answered, start=1)
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
    if stale:
        blocks.append(prompts.GUIDANCE_STALE)
    return "\n\n".join(blocks)


def quote_reference(text: str) -> str:
    """Make an answer safe to put between `<reference>` tags.

    Reference answers are untrusted text: one that writes its own `</reference>` (or opens
    a new block, or starts a fake guidance) must not end its block early, so those markers
    are defused; everything else is left exactly as written.
    """
    text = _BLOCK_TAG.sub(lambda m: "&lt;" + m.group(1), text)
    return text.replace(prompts.GUIDANCE_TITLE, prompts.GUIDANCE_TITLE.replace("[", "[quoted ", 1))


def aggregator_input(messages: Sequence[BaseMessage], guidance: str | None) -> list[BaseMessage]:
    """The aggregator's input: the full conversation with the guidance after the last human turn.

    With no guidance (a disabled preset), the conversation is returned unmodified.
    """
    if guidance is None:
        return list(messages)
    at = last_human_index(messages)
    cut = len(messages) if at is None else at + 1
    return [*messages[:cut], HumanMessage(content=guidance), *messages[cut:]]
