"""Which live node should own which partition: a pure function every node computes alike.

Rendezvous (highest-random-weight) hashing with a fair-share cap. Every (node, partition)
pair gets a score from a hash of both names; pairs are taken best score first, and a pair is
granted while its partition is unowned and its node is under its share. With ``N`` nodes and
``P`` partitions each node gets ``P // N`` and the first ``P % N`` nodes to reach that many get
one more, so the spread is even to within one, and the result depends only on the set of node
names -- not on the order a node learnt them in, nor on who computes it.

Rendezvous scores keep most partitions in place when the node set changes: a joining node
takes the partitions that score it highest (about ``P / (N + 1)`` of them); a leaving node's
partitions go to the nodes that score them next. The cap moves a few more so the spread stays
even.

The hash is BLAKE2b (8 bytes), not Python's ``hash()`` -- that one is salted per process, and
every node must compute the same thing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["assign", "moved", "owned_by", "score"]


def score(node: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{partition}\x00{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(partitions: int, nodes: Iterable[str]) -> dict[int, str]:
    """``{partition: node}`` for every partition in ``range(partitions)``; empty without
    nodes. Duplicated names count once."""
    names = sorted(set(nodes))
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    if not names:
        return {}
    base, extra = divmod(partitions, len(names))
    pairs = sorted(
        ((score(node, p), node, p) for node in names for p in range(partitions)), reverse=True
    )
    owner: dict[int, str] = {}
    count = dict.fromkeys(names, 0)
    for _score, node, p in pairs:
        if p in owner:
            continue
        have = count[node]
        if have < base or (have == base and extra > 0):
            if have == base:
                extra -= 1
            owner[p] = node
            count[node] = have + 1
            if len(owner) == partitions:
                break
    return owner


def owned_by(assignment: dict[int, str], node: str) -> frozenset[int]:
    return frozenset(p for p, n in assignment.items() if n == node)


def moved(before: dict[int, str], after: dict[int, str]) -> frozenset[int]:
    """Partitions whose owner differs between two assignments."""
    return frozenset(p for p in after.keys() | before.keys() if before.get(p) != after.get(p))
