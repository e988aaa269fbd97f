"""The pairwise judge's prompt: every text the evaluation puts in front of a model.

The judge sees one question and two answers, labelled A and B, and ends its reply with a
verdict in double brackets, as in MT-Bench's pairwise judge (Zheng et al., 2023): `[[A]]`,
`[[B]]` or `[[C]]` for a tie. Each pair is judged twice, the answers swapped the second time
(`moa_graph.evaluation.scoring`), so a judge that prefers a position cannot decide a pair.
"""

JUDGE_SYSTEM_PROMPT = """\
You are an impartial judge comparing two AI assistants' answers to the same user question. \
Decide which answer is more correct and more helpful. Do not let the order of the answers, \
their length or the assistants' names sway you; when neither is better, say it is a tie.

Explain your reasoning in at most three sentences, then give your verdict on the last line, \
exactly one of: [[A]] if answer A is better, [[B]] if answer B is better, [[C]] for a tie."""
"""System prompt of the pairwise judge."""

JUDGE_PAIR_PROMPT = """\
[User question]
{question}

[Answer A]
{answer_a}
[End of answer A]

[Answer B]
{answer_b}
[End of answer B]"""
"""The judge's user message: the question and the two answers, in the order being judged."""

VERDICT_A = "[[A]]"
"""The judge's verdict that answer A is better."""
VERDICT_B = "[[B]]"
"""The judge's verdict that answer B is better."""
VERDICT_TIE = "[[C]]"
"""The judge's verdict that neither answer is better."""
