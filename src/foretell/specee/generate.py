"""Token-by-token decoding with an exit rule (SpecEE, its peers, or none = the full model).

Hugging Face ``generate`` semantics for batch 1: greedy or sampling (temperature / top-k / top-p
through transformers' own logits warpers), ``eos_token_id`` (int or list), ``max_new_tokens``,
and a ``streamer`` (``put``/``end``, e.g. ``TextStreamer``) or a per-token ``callback``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from foretell.core.errors import ForetellError
from foretell.specee.adapters import DecoderAccess
from foretell.specee.draft import Draft
from foretell.specee.kv import LayerStepper
from foretell.specee.rules import ExitDecision, ExitRule
from foretell.specee.validate import check_sampling


@dataclass
class DecodeStats:
    """What a decode did: layers used per target pass and tokens emitted per pass. With checked
    exits ``emitted`` counts tentative tokens; ``retracted`` of them were rolled back (net of the
    full model's replacements) over ``rollbacks`` wrong exits, so ``kept`` is the output length."""

    layers: list[int] = field(default_factory=list)
    emitted: list[int] = field(default_factory=list)
    evaluations: int = 0
    head_checks: int = 0
    rollbacks: int = 0
    retracted: int = 0

    @property
    def kept(self) -> int:
        return sum(self.emitted) - self.retracted

    @property
    def avg_layers(self) -> float:
        return sum(self.layers) / max(1, len(self.layers))


class TokenPicker:
    """Greedy argmax, or sampling with transformers' temperature/top-k/top-p warpers."""

    def __init__(self, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, generator: torch.Generator | None = None):
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        check_sampling(do_sample, temperature, top_k, top_p, generator)
        self.do_sample = bool(do_sample)
        warpers = []
        if do_sample:
            if temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(float(temperature)))
            if top_k and top_k > 0:
                warpers.append(TopKLogitsWarper(int(top_k)))
            if top_p < 1.0:
                warpers.append(TopPLogitsWarper(float(top_p)))
        self.warpers = LogitsProcessorList(warpers)
        self.generator = generator

    def check_device(self, device: torch.device) -> None:
        """A sampling generator must live where the logits are (torch samples there)."""
        g = self.generator
        if self.do_sample and g is not None and g.device.type != device.type:
            raise ForetellError(f"the sampling generator is on {g.device} but the model on {device}; "
                                f"pass torch.Generator(device={str(device)!r})")

    def __call__(self, logits, ids) -> int:
        """Next token from ``logits`` (V,) or from an :class:`ExitDecision` (its last row; greedy
        then uses the exact token the exit check found, without the full-vocabulary product).
        ``ids``: the sequence so far (1-D), or a function returning it (built only when sampling)."""
        if isinstance(logits, ExitDecision):
            if not self.do_sample:
                return int(logits.argmax()[-1])
            logits = logits.logits[-1]
        if not self.do_sample:
            return int(logits.argmax(-1))
        if callable(ids):
            ids = ids()
        return int(torch.multinomial(self.probs(logits.view(1, -1), ids)[0], 1, generator=self.generator))

    def probs(self, logits: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Sampling distributions (n, V) of the rows of ``logits`` (n, V) after the warpers.
        ``ids``: the sequence so far; temperature / top-k / top-p ignore it, so it may be None."""
        n = logits.shape[0]
        ids = (torch.zeros(n, 1, dtype=torch.long, device=logits.device) if ids is None
               else ids.view(1, -1).to(logits.device).expand(n, -1))
        return torch.softmax(self.warpers(ids, logits.float()), dim=-1)


def eos_set(eos_token_id) -> set[int]:
    if eos_token_id is None:
        return set()
    return {int(e) for e in (eos_token_id if isinstance(eos_token_id, (list, tuple, set)) else [eos_token_id])}


class Emitter:
    """Collects generated ids, feeds the streamer/callback, and says when to stop."""

    def __init__(self, prompt: torch.Tensor, max_new_tokens: int, eos: set[int], streamer=None, callback=None):
        self.ids, self.max_new, self.eos = prompt.tolist(), int(max_new_tokens), eos
        self.device = prompt.device                      # the output goes back where the prompt came from
        self.n_prompt = len(self.ids)
        self.streamer, self.callback = streamer, callback
        self.done = self.max_new <= 0
        if streamer is not None:
            streamer.put(prompt.view(1, -1).cpu())

    def emit_all(self, tokens: list[int]) -> int:
        """Emit ``tokens`` in order (stopping at eos or the length limit); returns how many went out."""
        before = len(self.ids)
        for t in tokens:
            self.emit(t)
        return len(self.ids) - before

    def emit(self, tok: int) -> None:
        if self.done:
            return
        self.ids.append(int(tok))
        if self.streamer is not None:
            self.streamer.put(torch.tensor([int(tok)], device="cpu"))
        if self.callback is not None:
            self.callback(int(tok))
        if int(tok) in self.eos or len(self.ids) - self.n_prompt >= self.max_new:
            self.done = True

    def finish(self) -> torch.Tensor:
        """Prompt + generated ids (1, n) on the prompt's device."""
        if self.streamer is not None:
            self.streamer.end()
        return torch.tensor([self.ids], dtype=torch.long, device=self.device)


def start_decode(acc: DecoderAccess, stepper: LayerStepper, draft: Draft | None, input_ids: torch.Tensor,
                 max_new_tokens: int, eos_token_id, streamer, callback, pick):
    """The start every decoding loop shares: an :class:`Emitter`, the prefill, and the first new
    token ``pick(logits, prompt)`` from the full model, emitted and counted. Returns (emitter,
    stats, first token, its normalised state, the prompt on the model's device)."""
    em = Emitter(input_ids.view(-1), max_new_tokens, eos_set(eos_token_id), streamer, callback)
    prompt = input_ids.view(-1).to(acc.device)
    stats = DecodeStats()
    logits, state = prefill(acc, stepper, draft, prompt)
    tok = pick(logits, prompt)
    em.emit(tok)
    stats.layers.append(acc.num_layers)
    stats.emitted.append(1)
    return em, stats, tok, state, prompt


def greedy_pick(logits: torch.Tensor, prompt=None) -> int:
    """The argmax token of ``logits`` (V,)."""
    return int(logits.argmax(-1))


@torch.no_grad()
def prefill(acc: DecoderAccess, stepper: LayerStepper, draft: Draft | None, prompt: torch.Tensor):
    """Run the prompt through the full stack; prime the draft. Returns (last logits, last state)."""
    stepper.reset_state()
    if draft is not None:
        draft.reset_state()
    h, _, _ = stepper.run(prompt)
    states = acc.norm(h)
    if draft is not None and prompt.numel() > 1:
        draft.feed(prompt[1:], states[:-1])
    return acc.logits(states[-1:])[0], states[-1]


def exit_step(acc: DecoderAccess, stepper: LayerStepper, rule: ExitRule | None, draft: Draft | None,
              tok: torch.Tensor, state: torch.Tensor, k: int):
    """One target pass for ``tok``: draft candidates, layers with the exit rule, next-token logits.

    Returns (next-token scores: logits (V,) or the :class:`ExitDecision`, normalised state of the
    last computed layer, index of that layer).
    """
    cands = None
    if draft is not None:
        scores, _ = draft.feed(tok, state.view(1, -1))
        cands = draft.topk(scores, k).view(1, -1)
    if rule is not None:
        rule.start_token(cands)
    h, layer, dec = stepper.run(tok, rule)
    state = acc.norm(h[-1])
    if dec:
        rule.record(layer)
        return dec, state, layer
    return acc.logits(state), state, layer


@torch.no_grad()
def decode(acc: DecoderAccess, stepper: LayerStepper, rule: ExitRule | None, draft: Draft | None,
           input_ids: torch.Tensor, *, max_new_tokens: int, picker: TokenPicker, eos_token_id=None,
           streamer=None, callback=None, k: int = 4) -> tuple[torch.Tensor, DecodeStats]:
    """One sequence, one token per target pass; ``rule`` None = the full model. Runs on the model's
    device; the returned ids are on ``input_ids``' device. One host sync per token (the token id
    decides what comes next) plus the exit rule's (see :class:`~foretell.specee.rules.SpecEERule`)."""
    dev = acc.device
    picker.check_device(dev)
    if rule is not None:
        rule.reset_state()
    em, stats, tok, state, _ = start_decode(acc, stepper, draft, input_ids, max_new_tokens, eos_token_id, streamer,
                                            callback, picker)
    while not em.done:
        logits, state, layer = exit_step(acc, stepper, rule, draft, torch.tensor([tok], device=dev), state, k)
        tok = picker(logits, lambda: torch.tensor(em.ids, device=dev))
        em.emit(tok)
        stats.layers.append(layer + 1)
        stats.emitted.append(1)
    if rule is not None:
        stats.evaluations, stats.head_checks = rule.evaluations, rule.head_checks
    return em.finish(), stats
