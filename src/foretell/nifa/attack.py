"""NIFA end to end: ``NIFA(config).attack(data) -> PoisonedGraph``.

    from foretell.nifa import NIFA, NIFAConfig, load_preset, add_split
    data = add_split(load_preset("dblp"), seed=0)
    poisoned = NIFA(NIFAConfig.preset("dblp")).attack(data)
    poisoned.save("dblp_nifa.pt")          # PyG Data + injected-node metadata

On a GPU, PyG style: ``NIFA(cfg).attack(data.to("cuda"))`` (or ``NIFAConfig(device="cuda")`` for data on
the CPU); the poisoned graph comes back on the input's device.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from foretell.core.argtypes import MAX_SEED
from foretell.core.errors import ForetellError
from foretell.nifa.features import FeatureConfig, feature_box, optimise_features
from foretell.nifa.injection import append_nodes, injected_groups, injection_edges
from foretell.nifa.targets import select_targets
from foretell.nifa.uncertainty import RELU_GAIN, UncertaintyConfig, node_uncertainty

# Paper settings (Pokec-z/n, DBLP) and our choice for German (1% budget, Pokec-like weights).
PRESET_SETTINGS = {
    "pokec_z": dict(num_injected=102, edges_per_injected=50, alpha=0.01, beta=4.0, max_iter=20),
    "pokec_n": dict(num_injected=87, edges_per_injected=50, alpha=0.01, beta=4.0, max_iter=20),
    "dblp": dict(num_injected=32, edges_per_injected=24, alpha=0.1, beta=8.0, max_iter=10),
    "german": dict(num_injected=10, edges_per_injected=40, alpha=0.01, beta=4.0, max_iter=10),
}


@dataclass
class NIFAConfig:
    """All NIFA settings. ``num_injected=None`` means ``injection_rate`` x labelled nodes."""

    num_injected: int | None = None
    injection_rate: float = 0.01
    edges_per_injected: int = 24
    k: float = 0.5
    alpha: float = 0.1
    beta: float = 8.0
    max_iter: int = 10
    max_step: int = 50
    lr: float = 1e-3
    hidden: int = 128
    num_masks: int = 20
    keep_prob: float = 0.5
    # Bayesian-GCN schedule: lr 3e-3 x 150 epochs instead of the paper's 1e-3 x 500 (~3.3x cheaper);
    # its targets overlap the paper schedule's almost as much as two paper runs with different seeds do
    # (DBLP 0.967 vs 0.974, German 0.756 vs 0.792; benchmarks/results/nifa_uncertainty_overlap_*.json).
    uncertainty_epochs: int = 150
    uncertainty_lr: float = 3e-3
    uncertainty_check_every: int = 0     # >0: stop the Bayesian GCN once the targets are stable
    uncertainty_init_gain: float = RELU_GAIN   # official code: Xavier gain calculate_gain("relu"); before: 1.0
    use_all_labels_for_uncertainty: bool = False   # official code: train+val+test labels
    directional_gaps: bool = False       # non-paper, opt-in: widen the gaps on the training-label gap's side
    seed: int = 0
    device: str | None = None            # None: where the data is; else run there ("cpu", "cuda", "cuda:N")

    @classmethod
    def preset(cls, dataset: str, **overrides) -> "NIFAConfig":
        """The paper's settings for pokec_z / pokec_n / dblp, ours for german; others: defaults.
        ``overrides`` are NIFAConfig fields (an unknown one is a ``ForetellError`` listing them)."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ForetellError(f"NIFAConfig.preset: unknown setting(s) {', '.join(unknown)}; accepted: "
                                f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        return cls(**{**PRESET_SETTINGS.get(dataset, {}), **overrides})

    # (field, low, high) of the integer settings; high None: no upper bound
    INT_RANGES = (("edges_per_injected", 1, None), ("max_iter", 0, None), ("max_step", 1, None),
                  ("hidden", 1, None), ("num_masks", 2, None), ("uncertainty_epochs", 1, None),
                  ("uncertainty_check_every", 0, None), ("seed", 0, MAX_SEED))
    # (field, low, high, low_open, high_open) of the real-valued settings (always finite)
    NUMBER_RANGES = (("injection_rate", 0.0, 1.0, True, True), ("k", 0.0, 1.0, True, False),
                     ("alpha", 0.0, math.inf, False, False), ("beta", 0.0, math.inf, False, False),
                     ("lr", 0.0, math.inf, True, False), ("keep_prob", 0.0, 1.0, True, False),
                     ("uncertainty_lr", 0.0, math.inf, True, False),
                     ("uncertainty_init_gain", 0.0, math.inf, True, False))
    BOOL_FIELDS = ("use_all_labels_for_uncertainty", "directional_gaps")

    def validate(self) -> None:
        """One-line ``ForetellError`` on a bad setting (every bad one named: integers must be ints, not
        bools, floats or strings; numbers finite and in range; switches bools); ``device`` is checked
        and kept as a string, numpy scalars become Python numbers."""
        from foretell.nifa.validate import int_problem, number_problem

        bad = []
        if self.num_injected is not None:
            problem = int_problem(self.num_injected, 2)
            if problem:
                bad.append(f"num_injected={problem} or None (injection_rate x labelled nodes)")
        for name, low, high in self.INT_RANGES:
            problem = int_problem(getattr(self, name), low, high)
            if problem:
                bad.append(f"{name}={problem}")
        for name, low, high, low_open, high_open in self.NUMBER_RANGES:
            problem = number_problem(getattr(self, name), low, high, low_open=low_open, high_open=high_open)
            if problem:
                bad.append(f"{name}={problem}")
        for name in self.BOOL_FIELDS:
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                bad.append(f"{name}={getattr(self, name)!r} is not a bool (accepted: True or False)")
        if self.device is not None and not isinstance(self.device, (str, torch.device)):
            bad.append(f"device={self.device!r} is not a device name (accepted: None, cpu, cuda, cuda:N, mps)")
        if bad:
            raise ForetellError(f"invalid NIFA config: {'; '.join(bad)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.generic):
                setattr(self, f.name, value.item())
        if self.device is not None:
            from foretell.core.device import resolve_device

            self.device = str(resolve_device(self.device))

    def budget(self, data) -> int:
        if self.num_injected is not None:
            return int(self.num_injected)
        return max(2, int(round(self.injection_rate * int((data.y >= 0).sum()))))

    def check_data(self, data, targets: dict | None = None) -> int:
        """The budget b on ``data``, or a one-line ``ForetellError`` (before any work) when the settings
        cannot be met on this graph: b may not exceed the labelled nodes (an injection rate of 100%; the
        paper injects 1%), and each injected node's d edges go to distinct targets of its sensitive group
        (``targets``, else the ceil(k x n) candidates of each group), so d may not exceed the smaller group."""
        from foretell.nifa.validate import check_graph

        check_graph(data, "NIFAConfig.check_data", fields=("y", "sens"), other_masks=False)
        if targets is not None and not (isinstance(targets, dict) and 0 in targets and 1 in targets):
            raise ForetellError("NIFAConfig.check_data: targets must be a dict {0: nodes, 1: nodes}")
        y = data.y.cpu().numpy()
        labelled = int((y >= 0).sum())
        b = self.budget(data)
        if b > labelled:
            raise ForetellError(f"num_injected (--num-injected) {b} exceeds the {labelled} labelled nodes of the "
                                f"graph; accepted: 2 .. {labelled} (at most one injected node per labelled node; "
                                f"NIFA's paper injects 1% of them)")
        if targets is not None:
            sizes = {g: len(targets[g]) for g in (0, 1)}
            whence = "the given targets"
        else:
            sens = data.sens.cpu().numpy()
            counts = {g: int(((y >= 0) & (sens == g)).sum()) for g in (0, 1)}
            for g, count in counts.items():
                if count == 0:
                    raise ForetellError(f"sensitive group {g} has no labelled nodes; NIFA needs labelled nodes "
                                        f"in both groups")
            sizes = {g: int(np.ceil(self.k * counts[g])) for g in (0, 1)}
            whence = f"k={self.k} of the group's labelled nodes"
        g = min(sizes, key=sizes.get)
        if self.edges_per_injected > sizes[g]:
            raise ForetellError(f"edges per injected node (--edges-per-injected) d={self.edges_per_injected} "
                                f"exceeds the {sizes[g]} targets of sensitive group {g} ({whence}); each injected "
                                f"node links to distinct targets, so accepted: 1 .. {sizes[g]} (or raise --k)")
        return b


@dataclass
class PoisonedGraph:
    """The attacked graph (PyG ``Data``; injected nodes are the last ``len(injected_index)`` rows)."""

    data: object
    injected_index: torch.Tensor
    injected_group: torch.Tensor
    targets: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def num_injected(self) -> int:
        return int(self.injected_index.numel())

    def save(self, path) -> Path:
        """Save as a ``torch.save`` dict: ``data`` (``Data.to_dict()``), injected ids/groups, info
        (tensors saved from the CPU, so the file loads anywhere). Written to a temporary file beside
        ``path`` and renamed; on any failure a one-line ``ForetellError`` and nothing is left behind."""
        path = Path(path)
        if path.is_dir():
            raise ForetellError(f"cannot save the poisoned graph to {path}: it is a directory; give a file path, "
                                f"e.g. {path / 'poisoned.pt'}")
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in self.data.to_dict().items()}
            torch.save({"data": data, "injected_index": self.injected_index.cpu(),
                        "injected_group": self.injected_group.cpu(),
                        "targets": {int(k): torch.as_tensor(v) for k, v in self.targets.items()},
                        "info": self.info}, tmp)
            tmp.replace(path)
        except (OSError, RuntimeError) as exc:     # torch.save reports an unwritable file as a RuntimeError
            from foretell.core.errors import os_error_line

            detail = os_error_line(exc) if isinstance(exc, OSError) else str(exc).splitlines()[0]
            raise ForetellError(f"cannot save the poisoned graph to {path}: {detail}") from None
        finally:
            try:
                tmp.unlink(missing_ok=True)     # after a successful rename there is nothing to remove
            except OSError:
                pass
        return path

    @classmethod
    def load(cls, path) -> "PoisonedGraph":
        """Load a graph written by :meth:`save` (trusted files only: uses ``weights_only=False``)."""
        import pickle
        import zipfile

        from torch_geometric.data import Data

        path = Path(path)
        if path.is_dir():
            raise ForetellError(f"{path} is a directory, not a poisoned graph file saved by foretell nifa")
        if not path.is_file():
            raise ForetellError(f"poisoned graph not found: {path}")
        not_ours = f"{path}: not a poisoned graph saved by foretell nifa (PoisonedGraph.save / --save-poisoned)"
        try:
            blob = torch.load(path, weights_only=False)
        except OSError as exc:
            from foretell.core.errors import os_error_line

            raise ForetellError(f"cannot read the poisoned graph {path}: {os_error_line(exc)}") from None
        except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError, AttributeError,
                ImportError, IndexError, KeyError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ForetellError(f"{not_ours}; torch.load failed: {detail}") from None
        keys = ("data", "injected_index", "injected_group", "targets", "info")
        if not isinstance(blob, dict) or not all(k in blob for k in keys):
            what = (f"a dict without {', '.join(k for k in keys if k not in blob)}" if isinstance(blob, dict)
                    else f"a {type(blob).__name__}")
            raise ForetellError(f"{not_ours}; it holds {what}, expected a dict with {', '.join(keys)}")
        try:
            return cls(Data.from_dict(blob["data"]), blob["injected_index"], blob["injected_group"],
                       {k: v.numpy() for k, v in blob["targets"].items()}, blob["info"])
        except (KeyError, RuntimeError, TypeError, AttributeError, ValueError) as exc:
            raise ForetellError(f"{not_ours} ({exc})") from None


class NIFA:
    """The node-injection fairness attack. ``attack`` never modifies its input."""

    def __init__(self, config: NIFAConfig | None = None):
        from foretell.nifa.validate import check_config

        self.config = check_config("NIFA(config)", config, NIFAConfig, name="config")

    def _check(self, data, who: str) -> int:
        """The graph checks of the attack (:func:`foretell.nifa.validate.check_graph`); num_nodes."""
        from foretell.nifa.validate import check_graph

        self.config.validate()      # the fields may have been changed since __init__
        return check_graph(data, who, masks=("train_mask",), groups_in={
            "train_mask": "the feature step widens the gap between the groups' predictions on them"})

    def uncertainty(self, data, nodes=None) -> dict:
        """Step 1: Bayesian-GCN uncertainty of the target candidates (labelled nodes of known sensitive
        value), or of ``nodes`` (indices) when given, e.g. every training node for the defense."""
        from foretell.nifa.validate import check_node_ids

        n = self._check(data, "NIFA.uncertainty")
        if nodes is not None:
            nodes = check_node_ids("NIFA.uncertainty", "nodes", nodes, n)
        return self._uncertainty(data, nodes)

    def _uncertainty(self, data, nodes=None) -> dict:
        cfg = self.config
        data = self._on_device(data)
        lab = (data.y >= 0).cpu().numpy()
        train = np.flatnonzero(lab if cfg.use_all_labels_for_uncertainty else data.train_mask.cpu().numpy())
        cand = np.flatnonzero(lab & (data.sens >= 0).cpu().numpy()) if nodes is None else np.asarray(nodes)
        ucfg = UncertaintyConfig(hidden=cfg.hidden, num_masks=cfg.num_masks, keep_prob=cfg.keep_prob,
                                 epochs=cfg.uncertainty_epochs, lr=cfg.uncertainty_lr,
                                 check_every=cfg.uncertainty_check_every, k=cfg.k,
                                 init_gain=cfg.uncertainty_init_gain)
        return node_uncertainty(data, train, cand, ucfg, cfg.seed)

    def _on_device(self, data):
        """``data`` on ``config.device`` (a shallow copy moved there; the input is left as it is)."""
        if self.config.device is None:
            return data
        from foretell.core.device import resolve_device
        from foretell.nifa.graph import data_to

        return data_to(data, resolve_device(self.config.device))

    @staticmethod
    def _targets(targets, data, n: int) -> dict:
        """``targets`` checked: {0: nodes, 1: nodes}, distinct node ids of that sensitive group."""
        from foretell.nifa.validate import check_node_ids

        who = "NIFA.attack"
        if not isinstance(targets, dict) or set(targets) != {0, 1}:
            got = sorted(map(repr, targets)) if isinstance(targets, dict) else type(targets).__name__
            raise ForetellError(f"{who}: targets must be a dict {{0: nodes, 1: nodes}} (the target nodes of each "
                                f"sensitive group, e.g. PoisonedGraph.targets), got {got}")
        sens = data.sens.cpu().numpy()
        out = {}
        for g in (0, 1):
            ids = check_node_ids(who, f"targets[{g}]", targets[g], n)
            if len(np.unique(ids)) != len(ids):
                raise ForetellError(f"{who}: targets[{g}] names a node twice; list each target once")
            wrong = ids[sens[ids] != g]
            if len(wrong):
                raise ForetellError(f"{who}: targets[{g}] holds node {int(wrong[0])} of sensitive value "
                                    f"{int(sens[wrong[0]])}; the targets of group {g} must have sens == {g}")
            out[g] = ids
        return out

    def attack(self, data, *, targets: dict | None = None) -> PoisonedGraph:
        """Run steps 1-4 on ``data`` (needs x, y, sens, edge_index, train_mask; checked first, see
        :mod:`foretell.nifa.validate`).

        ``targets`` ({0: nodes, 1: nodes}, e.g. ``PoisonedGraph.targets`` of an earlier attack on the
        same graph) skips steps 1-2 and reuses them; the injection and features still follow the seed."""
        cfg = self.config
        n = self._check(data, "NIFA.attack")
        if targets is not None:
            targets = self._targets(targets, data, n)
        cfg.check_data(data, targets)               # before any work: b and d fit this graph
        input_device = data.x.device
        data = self._on_device(data)
        times = {}
        t0 = time.perf_counter()
        if targets is None:
            unc = self._uncertainty(data)
            targets = select_targets(unc["uncertainty"], data.y.cpu().numpy(), data.sens.cpu().numpy(), cfg.k)
        else:
            unc = {"epochs": 0}
        times["uncertainty"] = time.perf_counter() - t0
        b = cfg.budget(data)
        groups = injected_groups(b)
        rng = np.random.default_rng(cfg.seed)
        edges = injection_edges(data.num_nodes, groups, targets, cfg.edges_per_injected, rng)
        lo, hi = feature_box(data.x)
        integer = bool(getattr(data, "integer_features", False))
        gen = torch.Generator().manual_seed(cfg.seed + 1)      # CPU generator on every device (same start)
        placeholder = torch.zeros(b, data.x.shape[1], device=data.x.device)
        structure = append_nodes(data, edges, placeholder, b)
        t1 = time.perf_counter()
        fcfg = FeatureConfig(alpha=cfg.alpha, beta=cfg.beta, max_iter=cfg.max_iter, max_step=cfg.max_step,
                             lr=cfg.lr, hidden=cfg.hidden, directional_gaps=cfg.directional_gaps)
        train = np.flatnonzero(data.train_mask.cpu().numpy())
        x_inj, history = optimise_features(structure, data.num_nodes, groups, train, fcfg, lo, hi, integer, gen)
        times["features"] = time.perf_counter() - t1
        poisoned = append_nodes(data, edges, x_inj, b)
        if poisoned.x.device != input_device:
            poisoned = poisoned.to(input_device)
        times["total"] = time.perf_counter() - t0
        info = {"config": dataclasses.asdict(cfg), "seconds": times, "uncertainty_epochs_run": unc["epochs"],
                "feature_history": history, "num_edges_added": int(edges.shape[1] // 2),
                "device": str(data.x.device)}
        return PoisonedGraph(poisoned, torch.arange(data.num_nodes, data.num_nodes + b, device=input_device),
                             torch.as_tensor(groups, device=input_device), targets, info)
