"""Is NIFA's feature step doing its job on DBLP? Follow the surrogate's group gap through the rounds.

Builds the NIFA structure on DBLP (paper budget: 32 nodes x 24 edges; targets = top 50% per group of
a Bayesian GCN trained ``--uncertainty-epochs`` epochs, or of a random score with
``--uncertainty-epochs 0``), runs the feature optimisation and reports

* per round: surrogate CE, L_SP, L_EO, L_CF and the surrogate's signed prediction gap on the training
  nodes, ``train_sp_signed`` = P(yhat=1|s=1) - P(yhat=1|s=0);
* the final surrogate's signed gap with the injected features set to zero, to the optimised
  (continuous) features and to the rounded features;
* GCN victims retrained on the clean and on the poisoned graph: test acc, SP, EO (x100).

    python benchmarks/nifa_feature_diagnosis.py [--uncertainty-epochs 0] [--seed 0]
Writes benchmarks/results/nifa_feature_diagnosis.json.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

from foretell.core.argtypes import float_in, seed_int, threads_int


def signed_gap(pred: torch.Tensor, sens: torch.Tensor) -> float:
    return float((pred[sens == 1] == 1).float().mean() - (pred[sens == 0] == 1).float().mean())


def main() -> None:
    import foretell.nifa.features as features
    from foretell.core.paths import repo_root
    from foretell.core.report import write_json
    from foretell.nifa.attack import NIFA, NIFAConfig
    from foretell.nifa.features import FeatureConfig, feature_box
    from foretell.nifa.injection import append_nodes, injected_groups, injection_edges
    from foretell.nifa.loaders import load_preset
    from foretell.nifa.splits import add_split
    from foretell.nifa.targets import select_targets
    from foretell.nifa.graph import to_scipy
    from foretell.nifa.victims import VictimConfig, train_plain

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--uncertainty-epochs", type=int, default=0, help="0: random targets")
    ap.add_argument("--uncertainty-lr", type=float_in(0.0, 10.0, low_open=True), default=1e-3)
    ap.add_argument("--seed", type=seed_int, default=0)
    ap.add_argument("--threads", type=threads_int(1), default=1)
    ap.add_argument("--json", default=str(repo_root() / "benchmarks/results/nifa_feature_diagnosis.json"))
    from foretell.core.device import add_device_argument, parse_args_with_device

    add_device_argument(ap)
    args, device = parse_args_with_device(ap)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = add_split(load_preset("dblp"), 0).to(device)
    cfg = NIFAConfig.preset("dblp", seed=args.seed, uncertainty_epochs=max(1, args.uncertainty_epochs),
                            uncertainty_lr=args.uncertainty_lr)
    if args.uncertainty_epochs > 0:
        unc = NIFA(cfg).uncertainty(data)["uncertainty"]
    else:
        unc = np.random.default_rng(args.seed).random(data.num_nodes)
    targets = select_targets(unc, data.y.cpu().numpy(), data.sens.cpu().numpy(), cfg.k)
    b = cfg.budget(data)
    groups = injected_groups(b)
    edges = injection_edges(data.num_nodes, groups, targets, cfg.edges_per_injected, np.random.default_rng(args.seed))
    lo, hi = feature_box(data.x)
    structure = append_nodes(data, edges, torch.zeros(b, data.x.shape[1], device=device), b)
    train = np.flatnonzero(data.train_mask.cpu().numpy())
    fcfg = FeatureConfig(alpha=cfg.alpha, beta=cfg.beta, max_iter=cfg.max_iter, max_step=cfg.max_step, lr=cfg.lr)
    captured = {}

    class Objective(features.FeatureObjective):          # keep a handle on the surrogate
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            captured["obj"] = self

    original = features.FeatureObjective
    features.FeatureObjective = Objective
    raw = {}
    original_finalize = features.finalize_features

    def finalize(x, lo_, hi_, integer):
        raw["x"] = x.detach().clone()
        return original_finalize(x, lo_, hi_, integer)

    features.finalize_features = finalize
    try:
        x_inj, history = features.optimise_features(structure, data.num_nodes, groups, train, fcfg, lo, hi, True,
                                                     torch.Generator().manual_seed(args.seed + 1))
    finally:
        features.FeatureObjective, features.finalize_features = original, original_finalize
    obj = captured["obj"]
    surrogate = {}
    for name, x in (("zero_features", torch.zeros_like(x_inj)), ("optimised", raw["x"]), ("rounded", x_inj)):
        with torch.no_grad():
            surrogate[name] = signed_gap(obj.full_logits(x).argmax(-1), obj.sens)
    poisoned = append_nodes(data, edges, x_inj, b)
    victims = {}
    for graph_name, graph in (("clean", data), ("nifa", poisoned)):
        r = train_plain("gcn", graph, args.seed, VictimConfig())
        victims[graph_name] = {k: (100 * v if k in ("acc", "sp", "eo", "eo_tpr") else v) for k, v in r.items()}
    report = {"dataset": "dblp", "seed": args.seed, "device": str(device),
              "uncertainty_epochs": args.uncertainty_epochs,
              "uncertainty_lr": args.uncertainty_lr, "targets": "random" if args.uncertainty_epochs == 0 else "bayesian",
              "history": history, "surrogate_train_sp_signed": surrogate,
              "injected_nonzeros_per_row": float((x_inj != 0).sum(1).float().mean()),
              "real_nonzeros_per_row_median": float(np.median(np.diff(to_scipy(data.x).indptr))), "gcn": victims, "seconds": time.perf_counter() - t0,
              "load_average": list(os.getloadavg())}
    for h in history:
        print({k: round(v, 4) for k, v in h.items()})
    print("surrogate signed train gap:", surrogate)
    print("gcn:", victims)
    write_json(args.json, report)


if __name__ == "__main__":
    main()
