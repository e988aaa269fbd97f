"""Tools for MoA graphs: the example `calculator`, and `import_tool` for a config's `tools:`.

`calculator` does safe arithmetic without `eval`. A config names tools by import path
(`"moa_graph.tools:calculator"`, `"my_pkg.tools:search"`); `import_tool` loads one.
"""

from __future__ import annotations

import ast
import importlib
import operator
from collections.abc import Callable
from typing import Any, cast

from langchain_core.tools import BaseTool, StructuredTool, tool

__all__ = ["calculator", "evaluate_arithmetic", "import_tool"]

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


def import_tool(path: str) -> BaseTool:
    """Import the tool named by `path`, `"package.module:attribute"`.

    The attribute may be a LangChain tool or a plain function with a docstring, which is
    wrapped as a `StructuredTool`.

    Raises:
        ValueError: The path is malformed, cannot be imported, or names no tool; the
            message quotes the path.

    Example:
        >>> import_tool("moa_graph.tools:calculator").name
        'calculator'
    """
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{path!r} is not an import path; write it as 'package.module:tool'")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except Exception as exc:  # an import runs user code: anything it raises is this error
        raise ValueError(f"cannot import {path!r}: {type(exc).__name__}: {exc}") from None
    if isinstance(found, BaseTool):
        return found
    if callable(found) and not isinstance(found, type):
        try:
            return StructuredTool.from_function(found)
        except Exception as exc:
            raise ValueError(f"{path!r} cannot be used as a tool: {exc}") from None
    raise ValueError(f"{path!r} is not a tool or a function (got {type(found).__name__})")
