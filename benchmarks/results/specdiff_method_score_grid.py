import sys, json, time, torch, itertools
torch.set_num_threads(1)
from foretell.specdiff import SpecDiffConfig, apply
from foretell.specdiff.testbed.models import DigitsDiT
from foretell.specdiff.testbed.sampler import make_scheduler, make_noise, sample_labels, sample
from foretell.specdiff.testbed.metrics import psnr
kind = sys.argv[1]; n = int(sys.argv[2]); configs = json.loads(sys.argv[3])
m = DigitsDiT.load(f"src/foretell/specdiff/assets/{kind}-digits")
s = make_scheduler(m, 28)
noise = make_noise(m, n, 0); labels = sample_labels(n)
def run():
    s.set_timesteps(28)
    return sample(m, noise, labels, scheduler=s, guidance_scale=4.0)
ref = run()
out_rows = []
for c in configs:
    with apply(m.transformer, SpecDiffConfig(**c), scheduler=s, guidance_scale=4.0) as h:
        out = run(); st = h.stats()
    row = dict(c, psnr=round(psnr(out, ref), 2), macs=round(st["macs_fraction"], 3), spec=round(st["speculative_macs_fraction"], 3))
    out_rows.append(row); print(kind, json.dumps(row), flush=True)
json.dump(out_rows, open(sys.argv[4], "w"))
