"""Example tools for MoA graphs: `calculator`, safe arithmetic without `eval`."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import cast

from langchain_core.tools import tool

__all__ = ["calculator", "evaluate_arithmetic"]

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_MAX_EXPONENT = 1000
_MAX_POWER_BASE = 1e6
_MAX_CHARS = 200


def evaluate_arithmetic(expression: str) -> int | float:
    """Evaluate `+ - * / // % **` and parentheses over numbers, and nothing else.

    Raises:
        ValueError: The expression is not plain arithmetic, is too long, or divides by zero.

    Example:
        >>> evaluate_arithmetic("17 * 23")
        391
    """
    if len(expression) > _MAX_CHARS:
        raise ValueError(f"expression longer than {_MAX_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except OverflowError:
        raise ValueError("result too large") from None
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return cast(float, node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        # Bounded so that "9 ** 9 ** 9" is refused instead of stalling the process.
        if isinstance(node.op, ast.Pow) and (
            abs(right) > _MAX_EXPONENT or abs(left) > _MAX_POWER_BASE
        ):
            raise ValueError("power too large")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    raise ValueError(f"unsupported element in arithmetic: {type(node).__name__}")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as `17 * 23` or `(2 + 3) ** 2 / 5`.

    Args:
        expression: Numbers with + - * / // % ** and parentheses.
    """
    return str(evaluate_arithmetic(expression))
