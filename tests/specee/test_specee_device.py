"""Device correctness without a GPU: every tensor SpecEE builds names its device, host syncs are
counted per token, and the commands take ``--device`` with one-line errors."""

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from tiny_models import make_predictors, tiny_model
from foretell.specee.adapters import decoder_access
from foretell.specee.draft import AssistantDraft, DraftHead, HeadDraft, truncated_assistant
from foretell.specee.engine import SpecEE, SpecEEConfig

PROMPT = torch.tensor([[5, 17, 99, 3, 250, 42, 7]])
SPECEE_SRC = str(Path(__file__).resolve().parents[2] / "src" / "foretell" / "specee")
FACTORIES = {"arange", "zeros", "ones", "full", "empty", "tensor", "as_tensor", "randn", "rand", "randint",
             "randperm", "linspace", "eye", "from_numpy"}
SYNCS = {"__int__", "__bool__", "__float__", "__index__", "item", "tolist", "cpu", "numpy"}


class DeviceAudit(TorchFunctionMode):
    """Records factory calls made directly by SpecEE's code without ``device=`` (on a GPU they
    would land on the CPU) and counts host read-backs (syncs on a GPU) made by SpecEE's code."""

    def __init__(self):
        super().__init__()
        self.missing, self.syncs = [], 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in FACTORIES or name in SYNCS:
            f = sys._getframe(1)
            while f is not None and "/torch/" in f.f_code.co_filename:
                f = f.f_back
            if f is not None and f.f_code.co_filename.startswith(SPECEE_SRC):
                where = f"{Path(f.f_code.co_filename).name}:{f.f_lineno}"
                if name in FACTORIES and "device" not in kwargs:
                    self.missing.append(f"torch.{name} at {where}")
                elif name in SYNCS:
                    self.syncs += 1
        return func(*args, **kwargs)


def engine(model, bias=20.0, layers=(1, 3), **cfg):
    torch.manual_seed(0)
    head = DraftHead(decoder_access(model), torch.arange(256))
    return SpecEE(model, make_predictors(model, layers=list(layers), bias=bias, k=4), HeadDraft(head, k=4),
                  SpecEEConfig(k=4, **cfg))


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_decode_paths_build_every_tensor_on_the_model_device(kind):
    from foretell.specee.perplexity import teacher_forced_nll

    model = tiny_model(kind, layers=4)
    audit = DeviceAudit()
    with audit:
        for kv in ("lazy", "fill"):
            ee = engine(model, threshold=0.5, kv_strategy=kv)
            for method in ("specee", "full", "speculative", "specee+speculative"):
                ee.generate(PROMPT, max_new_tokens=10, eos_token_id=None, method=method)
            for method in ("specee", "speculative"):
                ee.generate(PROMPT, max_new_tokens=6, do_sample=True, top_p=0.9, temperature=0.8, method=method,
                            generator=torch.Generator().manual_seed(0))
            teacher_forced_nll(ee.acc, ee.stepper, ee.rule(), ee.draft, torch.arange(3, 20), 7, 4)
        ee = SpecEE(model, make_predictors(model, k=4), AssistantDraft(truncated_assistant(model, 2), 256, k=4),
                    SpecEEConfig(k=4))
        ee.generate(PROMPT, max_new_tokens=6, eos_token_id=None, method="speculative")
        ee.generate(PROMPT, max_new_tokens=6, eos_token_id=None, method="speculative", do_sample=True,
                    generator=torch.Generator().manual_seed(0))
    assert audit.missing == []


def test_collection_and_training_build_every_tensor_on_the_model_device(tmp_path, tiny):
    from foretell.specee.collect import collect_many, draft_pairs
    from foretell.specee.train import train_all

    acc = decoder_access(tiny)
    torch.manual_seed(0)
    prompts = [torch.randint(0, 256, (n,)) for n in (5, 7, 6)]
    out = tiny.generate(input_ids=prompts[0].view(1, -1).repeat(4, 1), max_new_tokens=6, do_sample=False,
                        pad_token_id=0)
    audit = DeviceAudit()
    with audit:
        items, _ = collect_many(acc, prompts, 6, None)
        draft_items = draft_pairs(acc, out, torch.ones(4, 5, dtype=torch.long), eos=None)
        train_all(acc, items, tmp_path, k=4, draft_vocab_size=64, draft_epochs=1, predictor_epochs=1,
                  draft_items=draft_items, draft_batch=2, log=lambda *a: None)
        SpecEE.from_pretrained(tiny, predictors=tmp_path).generate(PROMPT, max_new_tokens=4, eos_token_id=None)
    assert audit.missing == []
    assert all(t.device.type == "cpu" for it in items for t in it.values() if isinstance(t, torch.Tensor))


def test_host_syncs_per_token():
    """On a GPU each read-back waits for the device: the full model pays one per token (its id),
    SpecEE one more per evaluated layer and per candidate check, a speculative round a constant."""
    model = tiny_model(layers=6)
    n = 24
    ee = engine(model, bias=-30.0, layers=range(5), threshold=0.5, online=False)   # evaluates, never fires
    ee.rule()                                      # builds (and caches) the CPU screen outside the count
    counts = {}
    for method in ("full", "specee", "speculative"):
        audit = DeviceAudit()
        with audit:
            ee.generate(PROMPT, max_new_tokens=n, eos_token_id=None, method=method)
        counts[method] = (audit.syncs, ee.last_stats)
    base = 3                                       # input id checks (max, min), the prompt read-back
    assert counts["full"][0] == n + base
    syncs, st = counts["specee"]
    assert st.evaluations == 5 * (n - 1) and syncs == n + base + st.evaluations + st.head_checks
    syncs, st = counts["speculative"]
    assert syncs == base + 1 + 2 * (len(st.layers) - 1)       # two small read-backs per verify round


def test_generate_returns_on_the_input_device_and_checks_the_generator_device(tiny):
    from foretell.core.errors import ForetellError

    ee = engine(tiny)
    out = ee.generate(PROMPT.tolist(), max_new_tokens=3, eos_token_id=None)
    assert out.device.type == "cpu" and ee.device == torch.device("cpu")
    assert ee.predictors.mlps["1"][0].weight.device == ee.device == ee.draft.head.device

    class FakeCudaGenerator(torch.Generator):      # generate() takes torch.Generators only
        device = torch.device("cuda", 0)
    with pytest.raises(ForetellError, match="generator is on cuda:0 but the model on cpu"):
        ee.generate(PROMPT, max_new_tokens=3, do_sample=True, generator=FakeCudaGenerator())


def test_from_pretrained_device_argument(tmp_path, tiny):
    from foretell.core.errors import ForetellError

    preds = make_predictors(tiny, k=4)
    preds.save(tmp_path)
    DraftHead(decoder_access(tiny), torch.arange(256)).save(tmp_path)
    ee = SpecEE.from_pretrained(tiny, predictors=tmp_path, device="cpu")
    assert ee.device == torch.device("cpu") and ee.draft.head.device == ee.device
    with pytest.raises(ForetellError, match="unknown device 'gpu'"):
        SpecEE.from_pretrained(tiny, predictors=tmp_path, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ForetellError, match="no CUDA GPU"):
            SpecEE.from_pretrained(tiny, predictors=tmp_path, device="cuda")


@pytest.mark.parametrize("action", ["bench", "train", "generate"])
def test_commands_take_device(action, capsys):
    from foretell.cli import main

    with pytest.raises(SystemExit):
        main(["specee", action, "--help"])
    assert "--device" in capsys.readouterr().out


def _args(action, tmp_path):
    return {"bench": ["--quick", "--json", str(tmp_path / "r.json")],
            "train": ["--quick", "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json"),
                      "--data-dir", str(tmp_path / "data")],
            "generate": ["hello", "--max-new-tokens", "2"]}[action]


@pytest.mark.parametrize("action", ["bench", "train", "generate"])
@pytest.mark.parametrize("device", ["bogus", "cuda"])
def test_bad_or_missing_device_is_one_line_exit_2_and_writes_nothing(action, device, tmp_path, capsys):
    from foretell.cli import main

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    rc = main(["specee", action, *_args(action, tmp_path), "--device", device])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("foretell: error: ") and "Traceback" not in err
    assert ("unknown device 'bogus'" if device == "bogus" else "no CUDA GPU") in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_bench_report_records_the_device():
    pytest.importorskip("gguf")
    from foretell.specee.bench import run_bench
    from foretell.specee.loading import read_prompts

    from foretell.specee.kernels import onednn_available

    report = run_bench(read_prompts(None, "eval")[:1], 3, extras=False, ppl_texts=0,
                       methods_filter=["specee", "transformers_generate", "full_torch_linear"],
                       device="cpu", log=lambda *a: None)
    assert report["config"]["device"] == "cpu" and report["methods"]["specee"]["new_tokens"] == 3
    # transformers' own greedy loop on the stock kernels gives the full model's tokens
    assert report["methods"]["transformers_generate"]["agreement"] == 1.0
    if onednn_available():
        assert report["config"]["linear_kernel"] == "onednn"
        assert report["methods"]["full_torch_linear"]["agreement"] == 1.0


def test_cache_argument_name_follows_the_installed_transformers():
    from foretell.specee.adapters import cache_kwarg

    class OldLayer(torch.nn.Module):
        def forward(self, h, past_key_values=None, **kwargs):
            return h

    class OlderLayer(torch.nn.Module):
        def forward(self, h, past_key_value=None, **kwargs):
            return h

    assert cache_kwarg(OldLayer()) == "past_key_values" and cache_kwarg(OlderLayer()) == "past_key_value"
    model = tiny_model(layers=2)
    import inspect
    for m in (model, model.model.layers[0]):
        assert cache_kwarg(m) in inspect.signature(m.forward).parameters


def test_train_command_records_the_device(tmp_path, monkeypatch, tiny):
    import json

    import foretell.specee.collect as collect_mod
    import foretell.specee.loading as loading
    from foretell.cli import main
    from foretell.specee.collect import collect_one

    acc = decoder_access(tiny)
    torch.manual_seed(0)
    items = [collect_one(acc, torch.randint(0, 256, (1, 6)), 8, None) for _ in range(5)]
    asked = []
    monkeypatch.setattr(loading, "load_model", lambda path=None, dtype=None, device=None:
                        asked.append(device) or (tiny, None))
    monkeypatch.setattr(collect_mod, "collect", lambda *a, **k: [])
    monkeypatch.setattr(collect_mod, "load_shards", lambda d: items)
    rc = main(["specee", "train", "--quick", "--k", "4", "--draft-vocab", "64", "--device", "cpu",
               "--out", str(tmp_path / "out"), "--json", str(tmp_path / "t.json"), "--data-dir", str(tmp_path / "d")])
    assert rc == 0 and asked == [torch.device("cpu")]
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["config"]["device"] == "cpu" and report["calibration"]["tokens"] == 40
    assert (tmp_path / "out" / "predictors.json").is_file()
