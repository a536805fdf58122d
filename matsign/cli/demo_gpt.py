"""``python -m matsign train-demo --task gpt``: a character-level GPT on the standard library.

The text is the Python standard library's own top-level ``*.py`` files (every machine with
Python has them), sorted by name and split into training and validation *by file*; the
model is a small pre-LN GPT in torch. Each optimizer is a matsign functional stepper
applied by `matsign.optim.multi` to the model's parameters (as the digits demo does), with
the parameters routed by module type: `matsign.optim.torch.module_labels` sends the
embeddings, the output head, the layer norms to AdamW and the hidden matrices to the
matrix optimizer. The functional path takes every stepper of the family as soon as it
exists (a torch class is not needed), and it is the same engine the torch classes wrap.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

# '\n' and printable ASCII; every other character (tabs, non-ASCII) is one "other" token
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
VOCAB_SIZE = len(VOCAB) + 1
OPTIMIZERS = ("adamw", "muon", "normuon", "adamuon", "soap", "shampoo", "adafactor", "lion")
MATRIX_OPTIMIZERS = ("muon", "normuon", "adamuon", "soap", "shampoo")  # + AdamW on the rest

# The learning-rate sweep (``--sweep``): peak rates, a factor of 2 apart. The matrix
# optimizers' grid is their own rate; the rest of their parameters take AdamW's best.
SWEEP_GRID = {
    "adamw": (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2),
    "muon": (0.01, 0.02, 0.04, 0.08, 0.16),
    "normuon": (0.01, 0.02, 0.04, 0.08, 0.16),
    "adamuon": (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2),
    "soap": (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2),
    "shampoo": (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2),
    "adafactor": (0.025, 0.05, 0.1, 0.2, 0.4),  # relative to each parameter's RMS
    "lion": (6.25e-5, 1.25e-4, 2.5e-4, 5e-4, 1e-3),
}
# The sweep's choices (300 steps, seed 0; see the docs page "Training a small GPT").
LEARNING_RATES = {"adamw": 2e-3, "muon": 0.04, "normuon": 0.04, "adamuon": 8e-3,
                  "soap": 8e-3, "shampoo": 8e-3, "adafactor": 0.1, "lion": 2.5e-4}
BETA2 = 0.95  # every Adam-style second moment (AdamW, Shampoo's graft, SOAP), as LLM runs

MODEL = {"layers": 2, "width": 128, "heads": 4, "context": 64}


def source_files(root=None):
    """The standard library's top-level ``*.py`` files, sorted by name.

    Parameters
    ----------
    root : str or Path, optional
        Where to look; None: the directory of the running Python's ``os`` module.

    Returns
    -------
    list of Path
    """
    root = Path(os.path.dirname(os.__file__) if root is None else root)
    return sorted(p for p in root.glob("*.py") if p.is_file())


def split_files(files, *, every=10):
    """Split ``files`` by position: every ``every``-th file (from the first) is validation.

    Parameters
    ----------
    files : list
        In a fixed order (`source_files`).
    every : int, default 10
        One file in ``every`` goes to validation.

    Returns
    -------
    train, validation : list
        Disjoint; together ``files``.
    """
    if every < 2:
        msg = f"split_files: every must be at least 2; got {every!r}"
        raise ValueError(msg)
    return ([f for i, f in enumerate(files) if i % every],
            [f for i, f in enumerate(files) if not i % every])


def encode(text):
    """Token ids of ``text`` (`VOCAB` index; anything else is ``len(VOCAB)``) as int64.

    Parameters
    ----------
    text : str

    Returns
    -------
    torch.Tensor
        Shape ``(len(text),)``.
    """
    import torch

    table = {c: i for i, c in enumerate(VOCAB)}
    return torch.tensor([table.get(c, len(VOCAB)) for c in text], dtype=torch.int64)


def read_text(files, max_chars):
    """The files' text, one after the other, cut at ``max_chars`` characters.

    Parameters
    ----------
    files : list of Path
    max_chars : int

    Returns
    -------
    str
    """
    parts, total = [], 0
    for path in files:
        if total >= max_chars:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
    return "".join(parts)[:max_chars]


def load_corpus(*, max_chars=1_000_000, every=10, root=None):
    """Training and validation token streams from the standard library, split by file.

    Parameters
    ----------
    max_chars : int, default 1_000_000
        Characters of training text; validation gets ``max_chars // every``.
    every : int, default 10
        See `split_files`.
    root : str or Path, optional
        See `source_files`.

    Returns
    -------
    dict
        ``train``, ``validation`` (int64 tensors), ``train_files``, ``validation_files``
        (the file names, of which only a prefix may be read).
    """
    train_files, validation_files = split_files(source_files(root), every=every)
    return {"train": encode(read_text(train_files, max_chars)),
            "validation": encode(read_text(validation_files, max_chars // every)),
            "train_files": [f.name for f in train_files],
            "validation_files": [f.name for f in validation_files]}


def _gpt_classes():
    """The model's modules (defined on first use: torch is imported only when run)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        """Pre-LN transformer block: causal self-attention, then a 4x GELU MLP."""

        def __init__(self, width, heads):
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.query, self.key, self.value, self.proj = (
                nn.Linear(width, width, bias=False) for _ in range(4))
            self.fc = nn.Linear(width, 4 * width, bias=False)
            self.fc_proj = nn.Linear(4 * width, width, bias=False)

        def forward(self, x):
            b, t, c = x.shape
            h = self.ln1(x)
            q, k, v = (m(h).view(b, t, self.heads, c // self.heads).transpose(1, 2)
                       for m in (self.query, self.key, self.value))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
            return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        """Token and position embeddings, pre-LN blocks, final norm, untied head."""

        def __init__(self, *, vocab, layers, width, heads, context):
            super().__init__()
            self.token = nn.Embedding(vocab, width)
            self.position = nn.Embedding(context, width)
            self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
            self.ln_f = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab, bias=False)  # the last Linear: to AdamW
            for name, p in self.named_parameters():  # GPT-2's initialisation
                if p.ndim == 2:
                    std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
                    nn.init.normal_(p, std=std)

        def forward(self, idx):
            x = self.token(idx) + self.position(torch.arange(idx.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln_f(x))

    return GPT


def build_model(seed, **model):
    """The GPT, initialised from ``seed``.

    Parameters
    ----------
    seed : int
    **model
        ``layers``, ``width``, ``heads``, ``context`` (defaults: `MODEL`).

    Returns
    -------
    torch.nn.Module
    """
    import torch

    torch.manual_seed(seed)
    return _gpt_classes()(vocab=VOCAB_SIZE, **{**MODEL, **model})


def schedule(peak, steps, warmup):
    """Linear warmup over ``warmup`` steps to ``peak``, then linear decay to 0 at ``steps``.

    Parameters
    ----------
    peak : float
    steps, warmup : int

    Returns
    -------
    callable
        ``learning_rate(step)`` of the 0-d step count (0 at the first step).
    """
    import torch

    warmup = max(1, warmup)
    decay = max(1, steps - warmup)

    def learning_rate(step):
        ramp = torch.minimum((step + 1.0) / warmup, (steps - step) / decay)
        return peak * torch.clamp(ramp, 0.0, 1.0)

    return learning_rate


def steppers(name, *, lr, other_lr, steps, warmup):
    """The stepper(s) of optimizer ``name`` for `matsign.optim.multi`, by label.

    Parameters
    ----------
    name : str
        One of `OPTIMIZERS`.
    lr : float
        Peak learning rate of the optimizer (of the hidden matrices for the matrix ones).
    other_lr : float
        Peak learning rate of AdamW on the rest, for the matrix optimizers.
    steps, warmup : int
        Of the shared schedule (`schedule`).

    Returns
    -------
    dict of str to Stepper
        For the labels ``"matrix"`` and ``"other"`` of `matsign.optim.torch.module_labels`.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    from .. import optim

    rate = schedule(lr, steps, warmup)
    factories = {
        "adamw": lambda: optim.adamw(rate, b2=BETA2, weight_decay=0.0),
        "lion": lambda: optim.lion(rate),
        "adafactor": lambda: optim.adafactor(rate, relative_step=False, b1=0.9),
        "muon": lambda: optim.muon(rate),
        "normuon": lambda: optim.normuon(rate),
        "adamuon": lambda: optim.adamuon(rate),
        "soap": lambda: optim.soap(rate, b2=BETA2, weight_decay=0.0, every=10),
        "shampoo": lambda: optim.shampoo(rate, b2=BETA2, beta=BETA2, every=10),
    }
    if name not in factories:
        msg = f"unknown optimizer {name!r}; choose from {OPTIMIZERS}"
        raise ValueError(msg)
    stepper = factories[name]()
    if name not in MATRIX_OPTIMIZERS:
        return {"matrix": stepper, "other": stepper}
    return {"matrix": stepper,
            "other": optim.adamw(schedule(other_lr, steps, warmup), b2=BETA2,
                                 weight_decay=0.0)}


def batch(tokens, starts, context):
    """Inputs and next-token targets of the windows starting at ``starts``.

    Parameters
    ----------
    tokens : torch.Tensor
        A token stream.
    starts : torch.Tensor
        Window starts, each at most ``len(tokens) - context - 1``.
    context : int

    Returns
    -------
    x, y : torch.Tensor
        Shape ``(len(starts), context)``.
    """
    import torch

    index = starts[:, None] + torch.arange(context + 1)
    windows = tokens[index]
    return windows[:, :-1], windows[:, 1:]


def validation_loss(model, windows):
    """Mean next-token cross-entropy (nats) of ``model`` over fixed validation windows.

    Parameters
    ----------
    model : torch.nn.Module
    windows : list of (x, y)

    Returns
    -------
    float
    """
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        losses = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()) for x, y in windows]
    return float(torch.stack(losses).mean())


def validation_windows(tokens, *, context, count, seed, size=64):
    """``count`` fixed validation windows, drawn once from ``seed``, in batches of ``size``.

    Parameters
    ----------
    tokens : torch.Tensor
    context, count, seed, size : int

    Returns
    -------
    list of (x, y)
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(tokens) - context - 1, (count,), generator=generator)
    return [batch(tokens, s, context) for s in starts.split(size)]


def train(name, corpus, **options):
    """Train the GPT with optimizer ``name``; validation loss against steps and seconds.

    Parameters
    ----------
    name : str
        One of `OPTIMIZERS`.
    corpus : dict
        From `load_corpus`.
    **options
        See `training_run`.

    Returns
    -------
    dict
        See `training_run`.
    """
    return train_interleaved([name], corpus, **options)[name]


def train_interleaved(names, corpus, **options):
    """Train one GPT per optimizer, one step of each in turn, so that they share the load.

    On a machine whose cores other processes also use, the wall-time comparison is then
    one of steps taken under the same conditions; the losses are those of separate runs.

    Parameters
    ----------
    names : list of str
        From `OPTIMIZERS`.
    corpus : dict
        From `load_corpus`.
    **options
        See `training_run`.

    Returns
    -------
    dict of str to dict
        `training_run`'s record per optimizer, in the order of ``names``.
    """
    runs = {name: training_run(name, corpus, **options) for name in names}
    records = {}
    while runs:
        for name in list(runs):
            try:
                next(runs[name])
            except StopIteration as done:
                records[name] = done.value
                del runs[name]
    return {name: records[name] for name in names}


def training_run(name, corpus, *, steps, batch_size, seed, lr=None, other_lr=None,
                 eval_every=25, eval_windows=256, warmup=None, **model):
    """A generator that trains the GPT with optimizer ``name``, one step per ``next``.

    Parameters
    ----------
    name : str
        One of `OPTIMIZERS`.
    corpus : dict
        From `load_corpus`.
    steps, batch_size, seed : int
        Training steps, sequences per step, seed of the weights and the batches (the
        same batches for every optimizer).
    lr, other_lr : float, optional
        Peak learning rates (see `steppers`); None: `LEARNING_RATES`.
    eval_every, eval_windows : int
        Validation every so many steps (and after the last), on so many windows.
    warmup : int, optional
        Warmup steps; None: a tenth of ``steps``.
    **model
        See `build_model`.

    Yields
    ------
    int
        The step just taken.

    Returns
    -------
    dict
        (The value of ``StopIteration``.) ``steps``, ``seconds`` (training time before
        each evaluation, evaluation excluded) and ``validation`` (loss) per evaluation;
        ``train_losses`` per step; ``final`` (last validation loss), ``total_seconds``,
        ``lr`` and ``other_lr``.
    """
    import torch
    import torch.nn.functional as F

    from .. import optim
    from ..optim.torch import module_labels

    config = {**MODEL, **model}
    net = build_model(seed, **config)
    lr = LEARNING_RATES[name] if lr is None else lr
    other_lr = LEARNING_RATES["adamw"] if other_lr is None else other_lr
    table = steppers(name, lr=lr, other_lr=other_lr, steps=steps,
                     warmup=steps // 10 if warmup is None else warmup)
    params = dict(net.named_parameters())
    stepper = optim.multi(table, module_labels(net))
    state = stepper.init({k: p.detach() for k, p in params.items()})
    windows = validation_windows(corpus["validation"], context=config["context"],
                                 count=eval_windows, seed=seed + 2)
    generator = torch.Generator().manual_seed(seed + 1)
    high = len(corpus["train"]) - config["context"] - 1
    record = {"steps": [0], "seconds": [0.0], "validation": [validation_loss(net, windows)],
              "train_losses": []}
    elapsed = 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        x, y = batch(corpus["train"], torch.randint(0, high, (batch_size,), generator=generator),
                     config["context"])
        loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten())
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
        updates, state = stepper.update(grads, state, {k: p.detach() for k, p in params.items()})
        with torch.no_grad():
            for key, p in params.items():
                p.add_(updates[key])
        elapsed += time.perf_counter() - start
        record["train_losses"].append(float(loss.detach()))
        if step % eval_every == 0 or step == steps:
            record["steps"].append(step)
            record["seconds"].append(elapsed)
            record["validation"].append(validation_loss(net, windows))
        yield step
    record.update(final=record["validation"][-1], total_seconds=elapsed, lr=lr,
                  other_lr=other_lr)
    return record


def sweep(names, corpus, *, grid=None, **options):
    """Tune each optimizer's peak learning rate on a grid, by final validation loss.

    AdamW goes first (when asked for); its best rate is then the AdamW rate of the
    matrix optimizers' other parameters.

    Parameters
    ----------
    names : list of str
    corpus : dict
        From `load_corpus`.
    grid : dict of str to tuple of float, optional
        Learning rates to try per optimizer; None: `SWEEP_GRID`.
    **options
        Passed to `train` (steps, batch_size, seed, model sizes).

    Returns
    -------
    dict
        Per optimizer: ``grid`` (learning rate to final validation loss) and ``best``.
    """
    grid = SWEEP_GRID if grid is None else grid
    order = sorted(names, key=lambda n: n != "adamw")
    other_lr, results = LEARNING_RATES["adamw"], {}
    for name in order:
        losses = {}
        for lr in grid[name]:
            loss = train(name, corpus, lr=lr, other_lr=other_lr,
                         **{**options, "eval_every": options["steps"]})["final"]
            losses[lr] = loss if math.isfinite(loss) else float("inf")
            print(f"sweep {name:<10} lr {lr:<9.3g} validation loss {loss:.4f}", flush=True)
        best = min(losses, key=losses.get)
        results[name] = {"grid": losses, "best": best}
        if name == "adamw":
            other_lr = best
    return results


def table(results, *, steps, config):
    """The results as an aligned text table (final validation loss, training seconds).

    Parameters
    ----------
    results : dict of str to dict
        From `train`, by optimizer.
    steps : int
    config : dict
        The model sizes.

    Returns
    -------
    str
    """
    header = (f"character-level GPT (layers {config['layers']}, width {config['width']}, "
              f"context {config['context']}) on the standard library, {steps} steps; "
              f"uniform prediction: {math.log(VOCAB_SIZE):.3f}")
    lines = [header, f"{'optimizer':<10} {'peak lr':>8} {'val loss':>9} {'seconds':>8}"]
    for name, r in results.items():
        lines.append(f"{name:<10} {r['lr']:>8.3g} {r['final']:>9.4f} {r['total_seconds']:>8.1f}")
    return "\n".join(lines)


def plot(results, path, *, title):
    """Save validation loss against steps and against seconds, one line per optimizer.

    Parameters
    ----------
    results : dict of str to dict
        From `train`, by optimizer.
    path : str
        Output file (PNG).
    title : str
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for name, r in results.items():
        style = {"lw": 1.2, "label": f"{name} ({r['final']:.3f})",
                 "ls": "-" if name in MATRIX_OPTIMIZERS else "--"}
        by_step.plot(r["steps"], r["validation"], **style)
        by_time.plot(r["seconds"], r["validation"], **style)
    low = min(min(r["validation"]) for r in results.values())
    by_step.set(xlabel="step", ylabel="validation loss (nats per character)",
                ylim=(low - 0.05, min(math.log(VOCAB_SIZE), low + 1.5)))
    by_time.set(xlabel="training seconds (evaluation excluded)")
    by_time.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(args):
    """Run the GPT task for parsed ``args`` (see `matsign.cli.demo.add_arguments`).

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    int
        Exit status 0.
    """
    import json

    import torch

    from . import UsageError

    names = [n.strip() for n in (args.optimizers or ",".join(OPTIMIZERS)).split(",")
             if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        msg = f"unknown optimizer(s) {unknown} for --task gpt; choose from {OPTIMIZERS}"
        raise UsageError(msg)
    torch.set_num_threads(args.threads)
    config = {"layers": args.layers, "width": args.width, "heads": args.heads,
              "context": args.context}
    corpus = load_corpus(max_chars=args.max_chars)
    options = {"steps": args.steps or 300, "batch_size": args.batch_size or 32,
               "seed": args.seed, "eval_every": args.eval_every, **config}
    if args.sweep:
        print(json.dumps(sweep(names, corpus, **options), indent=2))
        return 0
    results = train_interleaved(names, corpus, **options)
    if args.json:
        print(json.dumps(results))
    else:
        print(table(results, steps=options["steps"], config=config))
    if args.plot:
        title = (f"character-level GPT on the standard library: layers {config['layers']}, "
                 f"width {config['width']}, context {config['context']}, batch "
                 f"{options['batch_size']}, {torch.get_num_threads()} thread(s)")
        plot(results, args.plot, title=title)
        print(f"validation curves saved to {args.plot}")
    return 0
