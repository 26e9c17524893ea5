"""Peak resident memory of one 28-step sampling run (8 samples, CFG 4) on a shipped digits model, without
cache (`full`) or with SpecDiff (default config unless a JSON config is given). Run each mode in a fresh
process: prints the peak RSS (ru_maxrss), the RSS before the run (model + noise loaded) and SpecDiff's
cache_bytes. Usage: python specdiff_method_memory.py sd3|flux full|specdiff [CONFIG_JSON]"""
import json, resource, sys, torch
from foretell.specdiff import SpecDiffConfig, apply
from specdiff_digits_setup import GUIDANCE, digits_setup
kind, mode = sys.argv[1], sys.argv[2]
cfg = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
m, s, run = digits_setup(kind, 8)
before = rss()
h = apply(m.transformer, SpecDiffConfig(**cfg), scheduler=s, guidance_scale=GUIDANCE) if mode == "specdiff" else None
with torch.no_grad():
    run()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"model": kind, "mode": mode, "config": cfg, "rss_before_run": before, "peak_rss": peak,
                  "peak_rise": peak - before, "cache_bytes": h.stats()["cache_bytes"] if h else 0,
                  "param_bytes": sum(p.numel() * p.element_size() for p in m.parameters())}), flush=True)
