"""``python -m matsign train-demo``: an MLP on scikit-learn's digits, or a small GPT.

``--task digits`` (the default) needs torch (autograd) and scikit-learn (the bundled
digits data, no download); ``--task gpt`` (`matsign.cli.demo_gpt`) needs torch only;
matplotlib for ``--plot``. The optimizers are matsign's functional steppers applied with
`matsign.optim.multi` to a dict of torch tensors.
"""

from __future__ import annotations

import json
import time

DESCRIPTION = """\
--task digits (default): train a 64-128-128-10 MLP on scikit-learn's bundled digits
(1797 8x8 images; 1297 to train, 500 to test) with AdamW, Muon, AdaMuon and NorMuon
(+AdamW for biases and the output head), Shampoo, SOAP, Lion, Tiger and Adafactor, the
same minibatches and the same number of steps for each, and print the final training
loss and test accuracy. With --plot, save the loss curves.

--task gpt: train a character-level GPT (pre-LN, 2 layers, width 128, context 64) on
the Python standard library's own source files, split into training and validation by
file, with AdamW, Muon, NorMuon, AdaMuon, SOAP, Shampoo (+AdamW for embeddings, head and
norms), Adafactor and Lion at swept learning rates, and print the final validation loss
and training time. With --plot, save validation loss against steps and against seconds;
--sweep runs the learning-rate sweep instead (slow: five runs per optimizer).

examples:
  python -m matsign train-demo --steps 300 --plot train-demo.png
  python -m matsign train-demo --task gpt --steps 300 --plot gpt-demo.png
"""

WIDTH = 128
OPTIMIZERS = ("adamw", "muon", "adamuon", "normuon", "shampoo", "soap", "lion", "tiger",
              "adafactor")
TASKS = ("digits", "gpt")


def add_arguments(parser):
    """Add the ``train-demo`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser.
    """
    from . import demo_gpt

    parser.add_argument("--task", choices=TASKS, default="digits",
                        help="digits MLP (default) or character-level GPT")
    parser.add_argument("--steps", type=int, help="training steps (default 300)")
    parser.add_argument("--batch-size", type=int,
                        help="minibatch (default: 128 images, 32 sequences)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batches")
    parser.add_argument("--optimizers",
                        help=f"comma-separated subset of {','.join(OPTIMIZERS)} (digits) "
                             f"or {','.join(demo_gpt.OPTIMIZERS)} (gpt); default: all")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: small matrices lose to threading)")
    parser.add_argument("--plot", metavar="PATH", help="save the curves (matplotlib)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    gpt = parser.add_argument_group("--task gpt")
    for name, value in demo_gpt.MODEL.items():
        gpt.add_argument(f"--{name}", type=int, default=value, help=f"default {value}")
    gpt.add_argument("--eval-every", type=int, default=25,
                     help="validation every so many steps (default 25)")
    gpt.add_argument("--max-chars", type=int, default=1_000_000,
                     help="characters of training text (default 1000000; a tenth as many "
                          "for validation)")
    gpt.add_argument("--sweep", action="store_true",
                     help="sweep each optimizer's learning rate instead (slow)")


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

    element_wise = {
        "adamw": lambda: optim.adamw(3e-3, weight_decay=0.01),
        "lion": lambda: optim.lion(3e-4, weight_decay=0.1),  # lr / 10, decay x 10
        "tiger": lambda: optim.tiger(3e-4, weight_decay=0.1),
        "adafactor": lambda: optim.adafactor(3e-2, relative_step=False, b1=0.9,
                                             weight_decay=0.01),
        "shampoo": lambda: optim.shampoo(3e-3, weight_decay=0.01, every=10, beta=0.999),
        "soap": lambda: optim.soap(3e-3, weight_decay=0.01, every=10),
    }
    hidden = {  # the hidden matrices; biases and the head (by its name) go to AdamW
        "muon": lambda: optim.muon(0.02, weight_decay=0.01),
        "adamuon": lambda: optim.adamuon(3e-3, weight_decay=0.01),
        "normuon": lambda: optim.normuon(0.02, weight_decay=0.01),
    }
    if name in element_wise:
        return element_wise[name](), None
    if name in hidden:
        table = {name: hidden[name](), "adamw": element_wise["adamw"]()}
        return table, lambda key, p: optim.route({key: p}, matrix=name, head=None)[key]
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

    from . import UsageError, demo_gpt

    if args.task == "gpt":
        return demo_gpt.run(args)
    if args.sweep:
        msg = "--sweep is for --task gpt"
        raise UsageError(msg)
    names = [n.strip() for n in (args.optimizers or ",".join(OPTIMIZERS)).split(",")
             if n.strip()]
    for n in names:  # unknown names fail before any training
        try:
            steppers(n)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    steps, batch_size = args.steps or 300, args.batch_size or 128
    torch.set_num_threads(args.threads)
    data = load_digits(args.seed)
    results = {n: train(n, data, steps=steps, batch_size=batch_size, seed=args.seed)
               for n in names}
    if args.json:
        print(json.dumps({n: {k: v for k, v in r.items() if k != "losses"}
                          for n, r in results.items()}, indent=2))
    else:
        print(table(results, steps))
    if args.plot:
        plot(results, args.plot)
        print(f"loss curves saved to {args.plot}")
    return 0
