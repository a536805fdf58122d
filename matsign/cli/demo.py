"""``python -m matsign train-demo``: a small MLP on scikit-learn's digits, four optimizers.

Needs torch (autograd) and scikit-learn (the bundled digits data, no download);
matplotlib for ``--plot``. The optimizers are matsign's functional steppers applied with
`matsign.optim.multi` to a dict of torch tensors.
"""

from __future__ import annotations

import json
import time

DESCRIPTION = """\
Train a 64-128-128-10 MLP on scikit-learn's bundled digits (1797 8x8 images; 1297 to
train, 500 to test) with AdamW, Muon (+AdamW for biases and the output head), Shampoo
and SOAP, the same minibatches and the same number of steps for each, and print the
final training loss and test accuracy. With --plot, save the loss curves.

example:
  python -m matsign train-demo --steps 300 --plot train-demo.png
"""

WIDTH = 128
OPTIMIZERS = ("adamw", "muon", "shampoo", "soap")


def add_arguments(parser):
    """Add the ``train-demo`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser.
    """
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--batch-size", type=int, default=128, help="minibatch (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batches")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                        help=f"comma-separated subset of {','.join(OPTIMIZERS)}")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: tiny matrices lose to threading)")
    parser.add_argument("--plot", metavar="PATH", help="save the loss curves (matplotlib)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def steppers(name):
    """The matsign stepper(s) and labels function for optimizer ``name`` (demo defaults).

    Parameters
    ----------
    name : str
        One of ``OPTIMIZERS``.

    Returns
    -------
    tuple
        ``(steppers, labels)`` for `matsign.optim.multi`.
    """
    from .. import optim

    if name == "adamw":
        return optim.adamw(3e-3, weight_decay=0.01), None
    if name == "muon":
        table = {"muon": optim.muon(0.02, weight_decay=0.01),
                 "adamw": optim.adamw(3e-3, weight_decay=0.01)}
        return table, lambda key, p: optim.route({key: p}, head=None)[key]  # head: by name
    if name == "shampoo":
        return optim.shampoo(3e-3, weight_decay=0.01, every=10, beta=0.999), None
    if name == "soap":
        return optim.soap(3e-3, weight_decay=0.01, every=10), None
    msg = f"unknown optimizer {name!r}; choose from {OPTIMIZERS}"
    raise ValueError(msg)


def load_digits(seed=0):
    """Standardised digits as float32 torch tensors: (x_train, y_train, x_test, y_test).

    Parameters
    ----------
    seed : int
        Seed of the train/test permutation.

    Returns
    -------
    tuple of torch.Tensor
    """
    import numpy as np
    import torch
    from sklearn.datasets import load_digits as _load

    data = _load()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x, y = data.data[order].astype(np.float32), data.target[order]
    x = (x - x[:1297].mean(0)) / (x[:1297].std(0) + 1.0)
    tensors = [torch.as_tensor(a) for a in (x[:1297], y[:1297], x[1297:], y[1297:])]
    return tuple(tensors)


def init_params(seed):
    """PyTorch-default (Kaiming-uniform) initialisation of the MLP, by name.

    Parameters
    ----------
    seed : int
        Initialisation seed.

    Returns
    -------
    dict of str to torch.Tensor
    """
    import torch

    torch.manual_seed(seed)
    layers = {"fc1": (64, WIDTH), "fc2": (WIDTH, WIDTH), "head": (WIDTH, 10)}
    params = {}
    for name, (fan_in, fan_out) in layers.items():
        linear = torch.nn.Linear(fan_in, fan_out)
        params[f"{name}.weight"] = linear.weight.detach().clone()
        params[f"{name}.bias"] = linear.bias.detach().clone()
    return params


def loss_fn(params, x, y):
    """Cross-entropy of the MLP.

    Parameters
    ----------
    params : dict of str to torch.Tensor
        The weights.
    x, y : torch.Tensor
        Inputs and labels.

    Returns
    -------
    loss : torch.Tensor
    logits : torch.Tensor
    """
    import torch.nn.functional as F

    h = F.relu(F.linear(x, params["fc1.weight"], params["fc1.bias"]))
    h = F.relu(F.linear(h, params["fc2.weight"], params["fc2.bias"]))
    logits = F.linear(h, params["head.weight"], params["head.bias"])
    return F.cross_entropy(logits, y), logits


def train(name, data, *, steps, batch_size, seed):
    """Train with optimizer ``name``; the loss per step and the final metrics.

    Parameters
    ----------
    name : str
        One of ``OPTIMIZERS``.
    data : tuple of torch.Tensor
        From `load_digits`.
    steps, batch_size, seed : int
        Training length, minibatch size, seed of the weights and the batches.

    Returns
    -------
    dict
        ``losses`` (per step), ``train_loss``, ``test_accuracy``, ``seconds``.
    """
    import torch

    from .. import optim

    x_train, y_train, x_test, y_test = data
    params = init_params(seed)
    table, labels = steppers(name)
    stepper = optim.multi(table, labels)
    state = stepper.init(params)
    batches = torch.Generator().manual_seed(seed + 1)
    losses, start = [], time.perf_counter()
    for _ in range(steps):
        index = torch.randint(0, len(y_train), (batch_size,), generator=batches)
        live = {k: p.requires_grad_() for k, p in params.items()}
        loss, _ = loss_fn(live, x_train[index], y_train[index])
        grads = dict(zip(live, torch.autograd.grad(loss, list(live.values())), strict=True))
        updates, state = stepper.update(grads, state, {k: p.detach() for k, p in live.items()})
        params = optim.apply_updates({k: p.detach() for k, p in live.items()}, updates)
        losses.append(float(loss.detach()))
    with torch.no_grad():
        train_loss, _ = loss_fn(params, x_train, y_train)
        _, logits = loss_fn(params, x_test, y_test)
    accuracy = float((logits.argmax(1) == y_test).float().mean())
    return {"losses": losses, "train_loss": float(train_loss), "test_accuracy": accuracy,
            "seconds": time.perf_counter() - start}


def table(results, steps):
    """The results as an aligned text table.

    Parameters
    ----------
    results : dict of str to dict
        From `train`, by optimizer.
    steps : int
        Steps taken (for the header).

    Returns
    -------
    str
    """
    lines = [f"digits MLP 64-{WIDTH}-{WIDTH}-10, {steps} steps",
             f"{'optimizer':<10} {'train loss':>11} {'test acc':>9} {'seconds':>8}"]
    for name, r in results.items():
        lines.append(f"{name:<10} {r['train_loss']:>11.4f} {r['test_accuracy']:>9.3f} "
                     f"{r['seconds']:>8.1f}")
    return "\n".join(lines)


def plot(results, path):
    """Save the per-step minibatch losses (log scale) to ``path``.

    Parameters
    ----------
    results : dict of str to dict
        From `train`, by optimizer.
    path : str
        Output file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot(r["losses"], label=f"{name} (test acc {r['test_accuracy']:.3f})", lw=1)
    ax.set(xlabel="step", ylabel="minibatch cross-entropy", yscale="log",
           title="MLP on scikit-learn digits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args):
    """Run the demo for parsed ``args``; print the table (or JSON).

    Parameters
    ----------
    args : argparse.Namespace
        From `add_arguments`' parser.

    Returns
    -------
    int
        Exit status 0.
    """
    import torch

    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    for n in names:
        steppers(n)  # unknown names fail before any training
    torch.set_num_threads(args.threads)
    data = load_digits(args.seed)
    results = {n: train(n, data, steps=args.steps, batch_size=args.batch_size,
                        seed=args.seed) for n in names}
    if args.json:
        print(json.dumps({n: {k: v for k, v in r.items() if k != "losses"}
                          for n, r in results.items()}, indent=2))
    else:
        print(table(results, args.steps))
    if args.plot:
        plot(results, args.plot)
        print(f"loss curves saved to {args.plot}")
    return 0
