import sys, json
from foretell.specdiff import SpecDiffConfig, apply
from foretell.specdiff.testbed.metrics import psnr
from specdiff_digits_setup import GUIDANCE, digits_setup
kind = sys.argv[1]; n = int(sys.argv[2]); configs = json.loads(sys.argv[3])
m, s, run = digits_setup(kind, n)
ref = run()
out_rows = []
for c in configs:
    with apply(m.transformer, SpecDiffConfig(**c), scheduler=s, guidance_scale=GUIDANCE) as h:
        out = run(); st = h.stats()
    row = dict(c, psnr=round(psnr(out, ref), 2), macs=round(st["macs_fraction"], 3), spec=round(st["speculative_macs_fraction"], 3))
    out_rows.append(row); print(kind, json.dumps(row), flush=True)
json.dump(out_rows, open(sys.argv[4], "w"))
