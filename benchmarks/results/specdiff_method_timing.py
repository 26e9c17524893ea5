"""Side-by-side timing + PSNR + MACs of SpecDiff variants vs full on a shipped digits model (1 thread,
interleaved repeats after a warm-up round, medians)."""
import sys, json, time, statistics
from foretell.specdiff import SpecDiffConfig, apply
from foretell.specdiff.testbed.metrics import psnr
from foretell.core.report import write_json
from specdiff_digits_setup import GUIDANCE, STEPS, digits_setup
kind = sys.argv[1]; n = int(sys.argv[2]); configs = json.loads(sys.argv[3]); reps = int(sys.argv[4]); out_path = sys.argv[5]
m, s, run = digits_setup(kind, n)
names = ["full"] + list(configs)
times = {k: [] for k in names}; res = {}
for rep in range(reps + 1):
    for name in names:
        c = configs.get(name)
        h = apply(m.transformer, SpecDiffConfig(**c), scheduler=s, guidance_scale=GUIDANCE) if c is not None else None
        t = time.perf_counter(); out = run(); dt = time.perf_counter() - t
        if rep: times[name].append(dt)
        if h is not None:
            st = h.stats(); h.remove()
            res[name] = {"config": SpecDiffConfig(**c).as_dict(), "macs_fraction": st["macs_fraction"],
                         "speculative_macs_fraction": st["speculative_macs_fraction"],
                         "computed_token_fraction": st["computed_token_fraction"], "cache_bytes": st["cache_bytes"]}
        else:
            ref = out
        res.setdefault(name, {})["out"] = out
full = statistics.median(times["full"])
rows = {}
for name in names:
    r = res[name]; med = statistics.median(times[name]); o = r.pop("out")
    rows[name] = {"seconds": med, "seconds_all": times[name], "speedup": full / med,
                  "psnr": psnr(o, ref) if name != "full" else None, **r}
    print(kind, name, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[name].items() if k != "config"}, flush=True)
write_json(out_path, {"model": f"{kind}-digits", "samples": n, "steps": STEPS, "guidance_scale": GUIDANCE, "seed": 0,
                      "threads": 1, "repeats": reps, "command": " ".join(sys.argv), "methods": rows})
