"""The compiled form of a strategy's expressions: a flat list of column-wise operations.

Nodes are added in dependency order and deduplicated (the same sub-expression written twice is
computed once), so evaluating a plan is a single pass over ``nodes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Node:
    op: str  # metric, const, builtin, neg, not, arith, cmp, and, or, in, if, call, cases, lookup
    args: tuple[int, ...]
    data: Any  # hashable details: a metric name, a constant, an operator, a function and its windows
    kind: str  # "num", "bool" or "str"
    lookback: int  # bars of history needed before the current bar
    labels: frozenset[str] | None = None  # for "str" nodes: every value it can take, when known


@dataclass
class Plan:
    nodes: list[Node] = field(default_factory=list)
    _index: dict[tuple, int] = field(default_factory=dict)

    def add(
        self,
        op: str,
        args: tuple[int, ...],
        data: Any,
        kind: str,
        own_lookback: int = 0,
        labels: frozenset[str] | None = None,
    ) -> int:
        key = (op, args, data, kind)
        found = self._index.get(key)
        if found is not None:
            return found
        lookback = own_lookback + max((self.nodes[a].lookback for a in args), default=0)
        self.nodes.append(Node(op, args, data, kind, lookback, labels))
        self._index[key] = len(self.nodes) - 1
        return len(self.nodes) - 1

    def const(self, value: Any) -> int:
        if isinstance(value, bool):
            return self.add("const", (), float(value), "bool")
        if isinstance(value, int | float):
            return self.add("const", (), float(value), "num")
        return self.add("const", (), str(value), "str", labels=frozenset([str(value)]))

    def metrics(self) -> set[str]:
        return {n.data for n in self.nodes if n.op == "metric"}
