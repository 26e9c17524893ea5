"""CUDA graphs for the runs of decoder layers where the pruning policy does nothing.

Why: on a fast GPU the eager Llama backbone is bound by the host's kernel launches once the
sequence is short. On an H200 with a Llama-2-7B backbone, ``LlamaModel.forward`` costs ~18 ms
whether it sees 158 or 606 rows, so pruning tokens saves nothing there. Replayed from a CUDA
graph, the same forward costs 12.5 ms at 235 rows (``docs/specprune.md``, GPU runs 6-7).

What: the engine hands each maximal run of *plain* layers (the policy neither scores at nor prunes
after them) to :class:`LayerGraphs`. The segment is keyed by (first layer, end layer, rows). It runs
eagerly until that key has been seen ``min_hits`` times. After that it is captured once and
replayed: the inputs (hidden states, position ids, rotary cos/sin) are copied into the graph's
static buffers, and the output is the graph's static output tensor. Scoring, pruning and the host
reads that fix the kept-token counts stay eager, between the segments.

A captured graph only replays its recorded kernels: it is valid while the shapes and the weights'
storage stay the same. Graphs are per key, at most ``max_graphs`` are kept (least recently used
dropped), and ``clear()`` drops them all (call it after moving or reloading the model).
``backend="emulate"`` runs the same buffer plumbing eagerly on any device (tests, debugging).
"""

from __future__ import annotations

import time
from collections import OrderedDict

import torch

from foretell.core.errors import ForetellError


def run_plain_layers(layers, hidden: torch.Tensor, position_ids: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor) -> torch.Tensor:
    """The decoder layers in order on the fast attention path, with no cache and no hooks."""
    for layer in layers:
        hidden = layer(hidden, attention_mask=None, position_ids=position_ids, position_embeddings=(cos, sin))
    return hidden


class _EmulatedGraph:
    """Stands in for ``torch.cuda.CUDAGraph`` off the GPU. It re-runs the captured function and
    writes the result into the output tensor from capture time, as a replay writes into its
    static output."""

    def __init__(self, fn):
        self.fn = fn
        self.output = fn()

    def replay(self) -> None:
        self.output.copy_(self.fn())


class _CudaGraph:
    """A captured ``torch.cuda.CUDAGraph`` of ``fn``, after warm-up runs on a side stream (as the
    PyTorch docs require before a capture)."""

    def __init__(self, fn, device: torch.device, warmup: int = 2):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn()

    def replay(self) -> None:
        self.graph.replay()


class _Segment:
    """Static input buffers and the captured graph of one (first layer, end layer, rows) key."""

    def __init__(self, layers, inputs: tuple, backend: str):
        self.inputs = tuple(t.clone() for t in inputs)
        fn = lambda: run_plain_layers(layers, *self.inputs)  # noqa: E731 - reads the static buffers only
        self.graph = _CudaGraph(fn, inputs[0].device) if backend == "cuda" else _EmulatedGraph(fn)

    def run(self, inputs: tuple) -> torch.Tensor:
        for buf, t in zip(self.inputs, inputs):
            buf.copy_(t)
        self.graph.replay()
        return self.graph.output


class LayerGraphs:
    """Captured runs of plain decoder layers for one model (see the module docstring).

    ``min_hits``: how many times a key must come up before it is captured. A kept-token count seen
    once costs no capture; a capture costs about two eager runs of the segment. ``max_graphs``:
    captured segments kept (least recently used dropped first).
    """

    BACKENDS = ("cuda", "emulate")

    def __init__(self, backend: str = "cuda", min_hits: int = 2, max_graphs: int = 64):
        if backend not in self.BACKENDS:
            raise ForetellError(f"graph backend {backend!r} is not known; accepted: {', '.join(self.BACKENDS)}")
        if backend == "cuda" and not torch.cuda.is_available():
            raise ForetellError("cuda_graphs needs a CUDA GPU, and torch sees none; run on a GPU or set cuda_graphs=False")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (min_hits, max_graphs)):
            raise ForetellError(f"min_hits={min_hits!r} and max_graphs={max_graphs!r} must both be integers >= 1")
        self.backend, self.min_hits, self.max_graphs = backend, int(min_hits), int(max_graphs)
        self._segments: OrderedDict = OrderedDict()
        self._hits: dict = {}
        self.counts = {"eager": 0, "captures": 0, "replays": 0}
        self.capture_seconds = 0.0  # wall time spent capturing (warm-up runs included)

    def check_device(self, device: torch.device) -> None:
        """Clear error when the model is not where the backend can capture it."""
        if self.backend == "cuda" and device.type != "cuda":
            raise ForetellError(f"cuda_graphs needs the model on a CUDA device, it is on {device}; "
                                "move the model to cuda or set cuda_graphs=False")

    def run(self, layers, start: int, stop: int, hidden, position_ids, cos, sin) -> torch.Tensor:
        """Output hidden states of ``layers[start:stop]``: replayed from a graph, captured now, or eager."""
        inputs = (hidden, position_ids, cos, sin)
        # the first layer's identity: one LayerGraphs shared by two same-shaped models keeps their graphs apart
        key = (id(layers[start]), start, stop, *(tuple(t.shape) for t in inputs), hidden.dtype, hidden.device)
        seg = self._segments.get(key)
        if seg is None:
            self._hits[key] = self._hits.get(key, 0) + 1
            if self._hits[key] < self.min_hits:
                self.counts["eager"] += 1
                return run_plain_layers(layers[start:stop], *inputs)
            t0 = time.perf_counter()
            seg = _Segment(layers[start:stop], inputs, self.backend)
            if self.backend == "cuda":  # the warm-up runs are queued work (a sync only when capturing)
                torch.cuda.synchronize(hidden.device)
            self.capture_seconds += time.perf_counter() - t0
            self.counts["captures"] += 1
            self._segments[key] = seg
            while len(self._segments) > self.max_graphs:
                self._segments.popitem(last=False)
        else:
            self._segments.move_to_end(key)
        self.counts["replays"] += 1
        return seg.run(inputs)

    def clear(self) -> None:
        """Drop every captured graph and hit count (after the model's weights moved or changed)."""
        self._segments.clear()
        self._hits.clear()

    @property
    def kept(self) -> int:
        """Captured segments held now."""
        return len(self._segments)
