"""Tree verification for lossless speculative decoding: the draft chain plus side leaves.

A chain verify can only accept the draft's first choice at each depth. A tree (SpecInfer, Medusa,
EAGLE) also verifies runners-up in the same pass. Here the tree is the greedy draft chain
``d_1 .. d_gamma`` plus, at depth ``j``, the draft's next ``widths[j-1]`` candidates at that depth
as leaves hanging from ``d_{j-1}`` (from the root at depth 1). The draft pays nothing extra: the
runners-up come from the same draft steps as the chain.

Each row sits at position ``past + depth`` and attends to the cache and to its own ancestors only
(the tree mask), so every row sees exactly the prefix a chain would have given it. The walk
accepts while the target's argmax at the current node is one of its children; the argmax at the
last accepted node is the bonus token. Rows off the accepted path leave the KV cache. Greedy, so
lossless like the chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foretell.core.errors import ForetellError
from foretell.specee.adapters import DecoderAccess
from foretell.specee.kv import LayerStepper


MAX_SIDE_LEAVES = 8


def check_tree_widths(widths, gamma: int) -> tuple[int, ...]:
    """``widths`` as a tuple of side leaves per depth; a one-line error unless each is in
    0..``MAX_SIDE_LEAVES`` and there are at most ``gamma`` of them (the chain's depths)."""
    from foretell.specee.validate import is_int, show

    if not isinstance(widths, (tuple, list)) or not all(is_int(w) for w in widths):
        raise ForetellError(f"tree must be a sequence of side-leaf counts per depth (ints), e.g. (2, 1) or () "
                            f"for a plain chain, got {show(widths)}")
    out = tuple(int(w) for w in widths)
    if len(out) > int(gamma) or any(not 0 <= w <= MAX_SIDE_LEAVES for w in out):
        raise ForetellError(f"tree needs at most gamma={gamma} depths with 0..{MAX_SIDE_LEAVES} side leaves each, "
                            f"got {out}")
    return out


def parse_tree(text: str) -> tuple[int, ...]:
    """argparse type: ``"3,1"`` -> (3, 1); ``"chain"`` or ``"0"`` -> () (no side leaves)."""
    import argparse

    if text.strip().lower() in ("chain", "none", ""):
        return ()
    try:
        widths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of side-leaf counts (accepted: e.g. '3,1' or 'chain')") from None
    if any(not 0 <= w <= MAX_SIDE_LEAVES for w in widths):
        raise argparse.ArgumentTypeError(f"{text!r}: each depth takes 0..{MAX_SIDE_LEAVES} side leaves")
    return () if not any(widths) else widths


@dataclass
class DraftTree:
    """Rows of one verify pass: row 0 is the root (the last committed token), then the ``gamma``
    chain rows, then the side leaves. ``parents[i]`` is the row of node i's parent (-1 for the root)."""

    tokens: torch.Tensor
    parents: list[int]
    depths: list[int]
    gamma: int

    @classmethod
    def build(cls, root: torch.Tensor, chain: torch.Tensor, sides: list[torch.Tensor]) -> "DraftTree":
        """``root`` (1,), ``chain`` (gamma,), ``sides[j]``: leaves at depth j+1 (children of chain row j)."""
        gamma = chain.numel()
        parents, depths = [-1] + list(range(gamma)), list(range(gamma + 1))
        for j, leaves in enumerate(sides):
            parents += [j] * leaves.numel()
            depths += [j + 1] * leaves.numel()
        tokens = torch.cat([root.view(-1), chain.view(-1)] + [s.view(-1).to(chain.device) for s in sides])
        return cls(tokens, parents, depths, gamma)

    def side_children(self) -> list[set[int]]:
        """Per chain row (root first): the tokens of its side-leaf children (the chain child excluded)."""
        toks = self.tokens.tolist()
        out: list[set[int]] = [set() for _ in range(self.gamma + 1)]
        for i in range(self.gamma + 1, len(self.parents)):
            out[self.parents[i]].add(toks[i])
        return out

    def ancestors(self, device) -> torch.Tensor:
        """(q, q) bool: row i sees row j (j is i or one of its ancestors)."""
        q = len(self.parents)
        rows = []
        for i in range(q):
            seen, j = [False] * q, i
            while j >= 0:
                seen[j] = True
                j = self.parents[j]
            rows.append(seen)
        return torch.tensor(rows, device=device)

    def accept(self, argmax: list[int]) -> tuple[list[int], list[int]]:
        """Walk from the root with the target's argmax per row. Returns (rows on the accepted path,
        root first; the accepted tokens: the accepted nodes' tokens + the bonus token)."""
        toks = self.tokens.tolist()
        children: dict[int, list[int]] = {}
        for i, p in enumerate(self.parents):
            children.setdefault(p, []).append(i)
        rows, accepted, cur = [0], [], 0
        while True:
            y = argmax[cur]
            accepted.append(y)
            nxt = next((c for c in children.get(cur, []) if toks[c] == y), None)
            if nxt is None:
                return rows, accepted
            rows.append(nxt)
            cur = nxt


@torch.no_grad()
def verify_tree(acc: DecoderAccess, stepper: LayerStepper, tree: DraftTree, exit_fn=None):
    """Run the rows of ``tree`` through the layers (tree mask, positions by depth), appending their
    K/V to the stepper's cache; ``exit_fn`` as in :meth:`LayerStepper.run`. Returns its result."""
    return stepper.run(tree.tokens, exit_fn, depths=tree.depths, ancestors=tree.ancestors(acc.device))


def keep_rows(stepper: LayerStepper, start: int, rows: list[int]) -> None:
    """Keep the cache's first ``start`` tokens and then only the verify rows ``rows`` (in order).
    A prefix of rows is a rollback (deferred rows included); any other path needs a full pass
    (no deferred rows)."""
    if rows == list(range(len(rows))):
        stepper.rollback(stepper.num_tokens - start - len(rows))
        return
    if stepper.pending:
        raise RuntimeError("keeping non-prefix tree rows needs a full pass (no deferred rows)")
    idx = None
    for lay in stepper.cache.layers:
        if idx is None or idx.device != lay.keys.device:
            idx = torch.tensor([start + r for r in rows], device=lay.keys.device)
        lay.keys = torch.cat([lay.keys[..., :start, :], lay.keys.index_select(-2, idx)], dim=-2)
        lay.values = torch.cat([lay.values[..., :start, :], lay.values.index_select(-2, idx)], dim=-2)
    stepper.num_tokens = start + len(rows)
