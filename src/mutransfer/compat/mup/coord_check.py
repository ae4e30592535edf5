"""``get_coord_data`` / ``plot_coord_data``: mup's coordinate check, same frame, same numbers.

Code written against ``mup.coord_check`` runs unchanged and gets the DataFrame mup gives:
columns ``width``, ``module``, ``t``, one column per statistic (``'l1'`` by default, or the
``output_fdict``/``input_fdict``/``param_fdict`` asked for), then ``optimizer`` and ``lr``; one
row per module output per forward pass, the root module (``''``) included; a tuple or dict
output recorded per element (``"name:out[0]"``, ``"name:out[key]"``, nested ``[i]``). The
values are mup's statistics computed as mup computes them (``FDICT``: ``'l2'`` is
``(x**2).mean()**0.5`` in the tensor's dtype), on the same random numbers: the models are built
and trained in mup's order, ``torch.manual_seed(seed)`` once per seed before its widths, one
forward pass per step, so dropout masks, shuffled loaders and the global RNG state afterwards
are mup's.

What differs, all of it where mup fails:

- ``cuda=True`` (mup's default) uses the GPU only when there is one (mup crashes on CPU-only
  machines);
- an output leaf that is not a tensor (``None`` in a tuple, as Hugging Face attention returns)
  is skipped (mup raises a ``TypeError``), and a statistic that fails names the module;
- a loader that yields no batch for some width or seed (a one-shot iterator with
  ``fix_data=False``) is an error (mup silently records nothing for that width);
- bad arguments (``lossfn``, ``optimizer``, ``nsteps``...) are refused before anything runs;
- ``show_progress`` uses tqdm when it is installed and prints a line per model otherwise;
- ``plot_coord_data`` draws with matplotlib alone (mup needs seaborn): mean over seeds, with
  the min–max band.

mutransfer's own check (``mutransfer.coord_check``) judges the scaling instead of leaving the
plot to be read: pass ``verdict=True`` and the frame (unchanged) carries its report in
``df.attrs["report"]`` (``.ok``, ``.summary()`` naming the layer at fault), computed on the same
models, data, optimizer and LR in a separate run whose random numbers do not touch mup's.

Needs pandas (the DataFrame) and, for the plot, matplotlib.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...optim import optimizer_class
from ...plan import Plan
from .infshape import InfDim, InfShape
from .optim import MuAdam, MuAdamW, MuSGD
from .plans import identity_plan
from .shape import extract_shapes
from .state import MupCompatError, state_of

__all__ = [
    "FDICT",
    "convert_fdict",
    "cov",
    "covoffdiag",
    "example_plot_coord_check",
    "get_coord_data",
    "plot_coord_data",
]

Statistic = Callable[[torch.Tensor], Any]
Record = dict[str, Any]

_DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}
_LOSSES = ("xent", "mse", "nll")
_OPTIONS = frozenset(
    {
        "nsteps",
        "dict_in_out",
        "flatten_input",
        "flatten_output",
        "output_name",
        "lossfn",
        "filter_module_by_name",
        "fix_data",
        "cuda",
        "nseeds",
        "output_fdict",
        "input_fdict",
        "param_fdict",
        "show_progress",
    }
)
"""The keyword options of ``_get_coord_data`` that ``get_coord_data`` passes on, as mup."""


# ------------------------------------------------------------------------------ statistics
def cov(x: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of ``x`` read as vectors along its last dimension, over their size.

    ``x`` of shape ``[..., d]`` holds N = prod(...) vectors of size d; the result is N × N,
    entry (i, j) = <x_i, x_j> / d. A one-element tensor is one vector of size 1.
    """
    if x.nelement() == 1:
        size, rows = 1, x.reshape(1, 1)
    else:
        size = x.shape[-1]
        rows = x.reshape(-1, size)
    return rows @ rows.T / size


def covoffdiag(x: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of ``cov(x)``, row by row, as one vector."""
    c = cov(x)
    return c[~torch.eye(c.shape[0], dtype=torch.bool, device=c.device)]


def _l1(x: torch.Tensor) -> torch.Tensor:
    return torch.abs(x).mean()


def _l2(x: torch.Tensor) -> torch.Tensor:
    # mup's RMS, in the tensor's own dtype: (x**2).mean() is float32 for a float32 model
    return (x**2).mean() ** 0.5


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean()


def _std(x: torch.Tensor) -> torch.Tensor:
    return x.std()


def _covl1(x: torch.Tensor) -> torch.Tensor:
    return torch.abs(cov(x)).mean()


def _covl2(x: torch.Tensor) -> torch.Tensor:
    return (cov(x) ** 2).mean() ** 0.5


def _covoffdiagl1(x: torch.Tensor) -> torch.Tensor:
    return torch.abs(covoffdiag(x)).mean()


def _covoffdiagl2(x: torch.Tensor) -> torch.Tensor:
    return (covoffdiag(x) ** 2).mean() ** 0.5


FDICT: dict[str, Statistic] = {
    "l1": _l1,
    "l2": _l2,
    "mean": _mean,
    "std": _std,
    "covl1": _covl1,
    "covl2": _covl2,
    "covoffdiagl1": _covoffdiagl1,
    "covoffdiagl2": _covoffdiagl2,
}
"""mup's named statistics: mean |x| (``'l1'``), RMS (``'l2'``), mean, std, and the same sizes
of ``cov(x)`` and of its off-diagonal part. ``*_fdict`` arguments may name them."""


def convert_fdict(d: Mapping[str, str | Statistic]) -> dict[str, Statistic]:
    """``d`` with every string value replaced by the ``FDICT`` statistic of that name."""
    out: dict[str, Statistic] = {}
    for key, value in d.items():
        if isinstance(value, str):
            if value not in FDICT:
                raise MupCompatError(
                    f"unknown statistic {value!r} for column {key!r}; FDICT has "
                    f"{', '.join(FDICT)} (or pass a function tensor -> number)"
                )
            out[key] = FDICT[value]
        elif callable(value):
            out[key] = value
        else:
            raise MupCompatError(
                f"statistic {key!r} must be a name from FDICT or a function, got {value!r}"
            )
    return out


# ------------------------------------------------------------------------------- recording
def _value(result: Any) -> Any:
    return result.item() if isinstance(result, torch.Tensor) else result


def _leaves(x: Any, label: str) -> Iterator[tuple[str, torch.Tensor]]:
    """``(label, tensor)`` for every tensor in ``x``, labelled as mup labels them: ``[i]`` per
    tuple/list element, ``[key]`` per dict entry. Other leaves (``None``...) are skipped."""
    if isinstance(x, torch.Tensor):
        yield label, x
    elif isinstance(x, tuple | list):
        for i, item in enumerate(x):
            yield from _leaves(item, f"{label}[{i}]")
    elif isinstance(x, dict):
        for key, item in x.items():
            yield from _leaves(item, f"{label}[{key}]")


def _stats(base: Record, label: str, x: torch.Tensor, fdict: Mapping[str, Statistic]) -> Record:
    row = {**base, "module": label}
    for column, fn in fdict.items():
        try:
            row[column] = _value(fn(x))
        except Exception as exc:
            raise MupCompatError(
                f"statistic {column!r} failed on {label!r} (a {x.dtype} tensor of shape "
                f"{list(x.shape)}): {exc}"
            ) from exc
    return row


def _record_coords(
    records: list[Record],
    width: Any,
    modulename: str,
    t: int,
    output_fdict: Mapping[str, str | Statistic] | None = None,
    input_fdict: Mapping[str, str | Statistic] | None = None,
    param_fdict: Mapping[str, str | Statistic] | None = None,
) -> Callable[[nn.Module, Any, Any], None]:
    """A forward hook appending one row per recorded tensor to ``records`` (mup's rows).

    Rows, in this order: the output (``modulename``; per element ``modulename:out[i]`` for a
    tuple/list, ``:out[key]`` for a dict) with ``output_fdict``'s statistics (default
    ``{'l1': 'l1'}``); the positional inputs (``modulename:in[i]``) with ``input_fdict``'s; the
    module's parameters, its submodules' included (``modulename:param[name]``), with
    ``param_fdict``'s. Each row holds ``width``, ``module`` and ``t``.
    """
    out_f = convert_fdict(output_fdict) if output_fdict is not None else {"l1": FDICT["l1"]}
    in_f = convert_fdict(input_fdict) if input_fdict is not None else {}
    param_f = convert_fdict(param_fdict) if param_fdict is not None else {}
    base: Record = {"width": width, "module": modulename, "t": t}

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        with torch.no_grad():
            if isinstance(output, torch.Tensor):
                records.append(_stats(base, modulename, output, out_f))
            elif isinstance(output, tuple | list | dict):
                for label, x in _leaves(output, f"{modulename}:out"):
                    records.append(_stats(base, label, x, out_f))
            if in_f:
                for label, x in _leaves(inputs, f"{modulename}:in"):
                    records.append(_stats(base, label, x, in_f))
            if param_f:
                for name, p in module.named_parameters():
                    records.append(_stats(base, f"{modulename}:param[{name}]", p, param_f))

    return hook


# -------------------------------------------------------------------------------- training
def _loss_of(
    model: nn.Module,
    batch: Any,
    device: torch.device | None,
    *,
    dict_in_out: bool,
    flatten_input: bool,
    flatten_output: bool,
    output_name: str,
    lossfn: str,
) -> torch.Tensor:
    """One forward pass and the loss, as mup computes them."""
    if dict_in_out:
        if not isinstance(batch, Mapping):
            raise MupCompatError(
                f"dict_in_out=True needs batches that are dicts of model inputs, got "
                f"{type(batch).__name__}"
            )
        inputs = {
            k: v.to(device) if device is not None and isinstance(v, torch.Tensor) else v
            for k, v in batch.items()
        }
        outputs = model(**inputs)
        loss: torch.Tensor = outputs[output_name] if isinstance(outputs, dict) else outputs[0]
        return loss
    try:
        data, target = batch
    except (TypeError, ValueError):
        raise MupCompatError(
            f"a batch must be (input, target) (or a dict with dict_in_out=True), got "
            f"{type(batch).__name__}"
        ) from None
    if device is not None:
        data, target = data.to(device), target.to(device)
    if flatten_input:
        data = data.view(data.size(0), -1)
    output = model(data)
    if flatten_output:
        output = output.view(-1, output.shape[-1])
    if lossfn == "xent":
        return F.cross_entropy(output, target)
    if lossfn == "mse":
        return F.mse_loss(output, F.one_hot(target, num_classes=output.size(-1)).float())
    return F.nll_loss(output, target)


class _Progress:
    """tqdm's bar when tqdm is installed (as mup), else one line per model on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.bar = total, 0, None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total)

    def update(self, what: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            print(f"coord check {self.done}/{self.total}: {what}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _get_coord_data(
    models: Mapping[Any, Callable[[], nn.Module]],
    dataloader: Iterable[Any],
    optcls: Callable[[nn.Module], torch.optim.Optimizer],
    nsteps: int = 3,
    dict_in_out: bool = False,
    flatten_input: bool = False,
    flatten_output: bool = False,
    output_name: str = "loss",
    lossfn: str = "xent",
    filter_module_by_name: Callable[[str], bool] | None = None,
    fix_data: bool = True,
    cuda: bool = True,
    nseeds: int = 1,
    output_fdict: Mapping[str, str | Statistic] | None = None,
    input_fdict: Mapping[str, str | Statistic] | None = None,
    param_fdict: Mapping[str, str | Statistic] | None = None,
    show_progress: bool = True,
) -> Any:
    """Drop-in for ``mup.coord_check._get_coord_data``: ``get_coord_data`` with an optimizer
    factory ``optcls(model)`` of your own. Returns the frame without ``optimizer``/``lr``.

    For every seed 0..nseeds-1: ``torch.manual_seed(seed)``, then for every width in
    ``models``' order: build, ``train()``, ``optcls(model)``, and ``nsteps`` steps of forward
    (recording), ``zero_grad``, ``backward``, ``step`` — the first batch of ``dataloader``
    at every step (``fix_data``), else the loader's batches in turn (iterated afresh per model,
    as mup does, so a shuffling loader reshuffles).
    """
    pandas = _pandas()
    steps = _positive_int("nsteps", nsteps)
    seeds = _positive_int("nseeds", nseeds)
    if not dict_in_out and lossfn not in _LOSSES:
        raise MupCompatError(f"lossfn must be one of {', '.join(_LOSSES)}, got {lossfn!r}")
    for fdict in (output_fdict, input_fdict, param_fdict):
        if fdict is not None:
            convert_fdict(fdict)  # refuse unknown statistics before anything trains
    if not models:
        raise MupCompatError("models is empty: give {width: function building the model}")
    device = torch.device("cuda") if cuda and torch.cuda.is_available() else None
    batches: Iterable[Any] = dataloader
    if fix_data:
        try:
            first = next(iter(dataloader))
        except StopIteration:
            raise MupCompatError("the dataloader yielded no batch") from None
        batches = [first] * steps
    records: list[Record] = []
    progress = _Progress(seeds * len(models), show_progress)
    try:
        for seed in range(seeds):
            torch.manual_seed(seed)
            for width, build in models.items():
                model = build()
                if not isinstance(model, nn.Module):
                    raise MupCompatError(
                        f"models[{width!r}]() returned {type(model).__name__}, not an nn.Module: "
                        "models maps widths to functions that build the model"
                    )
                model = model.train()
                if device is not None:
                    model = model.to(device)
                optimizer = optcls(model)
                done = 0
                for t, batch in enumerate(batches, 1):
                    handles = [
                        module.register_forward_hook(
                            _record_coords(
                                records, width, name, t, output_fdict, input_fdict, param_fdict
                            )
                        )
                        for name, module in model.named_modules()
                        if filter_module_by_name is None or filter_module_by_name(name)
                    ]
                    try:
                        loss = _loss_of(
                            model,
                            batch,
                            device,
                            dict_in_out=dict_in_out,
                            flatten_input=flatten_input,
                            flatten_output=flatten_output,
                            output_name=output_name,
                            lossfn=lossfn,
                        )
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                    finally:
                        for handle in handles:
                            handle.remove()
                    done = t
                    if t == steps:
                        break
                if done == 0:
                    raise MupCompatError(
                        f"the dataloader yielded no batch for width {width!r}, seed {seed}: "
                        "with fix_data=False it is iterated once per model, so pass a list or a "
                        "DataLoader, not a one-shot iterator"
                    )
                progress.update(f"width {width}, seed {seed}")
    finally:
        progress.close()
    return pandas.DataFrame(records)


def get_coord_data(
    models: Mapping[Any, Callable[[], nn.Module]],
    dataloader: Iterable[Any],
    optimizer: str = "sgd",
    lr: float | None = None,
    mup: bool = True,
    filter_trainable_by_name: Callable[[str], bool] | None = None,
    *,
    verdict: bool = False,
    **kwargs: Any,
) -> Any:
    """Drop-in for ``mup.coord_check.get_coord_data``; see the module docstring.

    Args:
        models: ``{width: function building the model}`` (after ``set_base_shapes`` when
            ``mup=True``); one width is enough.
        dataloader: batches ``(input, target)`` (dicts with ``dict_in_out=True``).
        optimizer: ``'sgd'``, ``'adam'`` or ``'adamw'``; ``MuSGD``/``MuAdam``/``MuAdamW`` with
            ``mup=True``, torch's otherwise.
        lr: the base LR (default 0.1 for SGD, 1e-3 otherwise); 0 is allowed.
        filter_trainable_by_name: only parameters whose name it accepts are given to the
            optimizer (the others still get gradients, as in mup).
        verdict: mutransfer's extension (keyword only): also run ``mutransfer.coord_check`` on
            the same models and attach its report as ``df.attrs["report"]``. Needs two widths
            or more and ``lr > 0``.
        **kwargs: ``_get_coord_data``'s options: ``nsteps`` (3), ``dict_in_out``,
            ``flatten_input``, ``flatten_output``, ``output_name``, ``lossfn`` (``'xent'``,
            ``'mse'``, ``'nll'``), ``filter_module_by_name``, ``fix_data`` (True), ``cuda``,
            ``nseeds`` (1), ``output_fdict``, ``input_fdict``, ``param_fdict``,
            ``show_progress``.

    Returns:
        mup's DataFrame: ``width``, ``module``, ``t``, the statistics, ``optimizer``, ``lr``.
    """
    unknown = sorted(set(kwargs) - _OPTIONS)
    if unknown:
        raise TypeError(f"get_coord_data() got unexpected keyword argument(s): {unknown}")
    if optimizer not in _DEFAULT_LR:
        raise MupCompatError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {optimizer!r}")
    if lr is None:
        lr = _DEFAULT_LR[optimizer]
    if verdict:
        _check_verdict_arguments(models, lr)
    # mup's own optimizers, or torch's (from the library's one optimizer table)
    mu_optimizers: dict[str, Any] = {"sgd": MuSGD, "adam": MuAdam, "adamw": MuAdamW}
    make = mu_optimizers[optimizer] if mup else optimizer_class(optimizer)
    base_lr = lr

    def optcls(model: nn.Module) -> torch.optim.Optimizer:
        params: Iterable[Any] = model.parameters()
        if filter_trainable_by_name is not None:
            params = [p for n, p in model.named_parameters() if filter_trainable_by_name(n)]
        opt: torch.optim.Optimizer = make(params, lr=base_lr)
        return opt

    df = _get_coord_data(models, dataloader, optcls, **kwargs)
    df["optimizer"] = optimizer
    df["lr"] = lr
    if verdict:
        # the verdict's own random numbers (model builds, a shuffling loader) must not move
        # the global state away from where mup's run leaves it
        cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda_devices):
            df.attrs["report"] = _verdict(
                models, dataloader, optimizer, lr, mup, filter_trainable_by_name, kwargs
            )
    return df


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MupCompatError(f"{name} must be a positive integer, got {value!r}")
    return value


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("get_coord_data returns a pandas DataFrame: pip install pandas") from None
    return pandas


# ----------------------------------------------------------------- mutransfer's verdict
def _check_verdict_arguments(models: Mapping[Any, Any], lr: float) -> None:
    if len(models) < 2:
        raise MupCompatError(
            "verdict=True judges how coordinates scale with width: give two widths or more"
        )
    if not lr > 0:
        raise MupCompatError(f"verdict=True needs lr > 0 (got {lr!r})")
    for width in models:
        if isinstance(width, bool) or not isinstance(width, int):
            raise MupCompatError(
                f"verdict=True needs integer widths as the keys of models, got {width!r}"
            )


def _verdict(
    models: Mapping[Any, Callable[[], nn.Module]],
    dataloader: Iterable[Any],
    optimizer: str,
    lr: float,
    mup: bool,
    filter_trainable_by_name: Callable[[str], bool] | None,
    options: Mapping[str, Any],
) -> Any:
    """``mutransfer.coord_check`` on the same models, data, optimizer and LR.

    It runs after mup's recording, inside ``fork_rng`` (see ``get_coord_data``), so the frame
    and the random state the caller sees are those of mup's run. It records after
    0..nsteps-1 updates (mup's t = 1..nsteps) and uses the first batch.
    """
    from ...coord import coord_check

    family = "sgd" if optimizer == "sgd" else "adam"
    nsteps = int(options.get("nsteps", 3))

    def factory(width: int) -> tuple[nn.Module, Plan]:
        model = models[width]()
        if filter_trainable_by_name is not None:
            for name, p in model.named_parameters():
                p.requires_grad_(bool(filter_trainable_by_name(name)))
        return model, _plan_for(model, family, mup)

    modules = None
    keep = options.get("filter_module_by_name")
    if keep is not None:
        probe = models[next(iter(models))]()
        modules = [n for n, _ in probe.named_modules() if n and keep(n)]
        if not modules:
            raise MupCompatError("filter_module_by_name kept no module")
    cuda = options.get("cuda", True) and torch.cuda.is_available()
    return coord_check(
        factory,
        sorted(int(w) for w in models),
        steps=max(1, nsteps - 1),
        seeds=int(options.get("nseeds", 1)),
        optimizer=optimizer,
        lr=lr,
        data=next(iter(dataloader)),
        loss=_verdict_loss(options),
        modules=modules,
        device="cuda" if cuda else "cpu",
    )


def _verdict_loss(options: Mapping[str, Any]) -> Callable[[Any, Any], torch.Tensor]:
    if options.get("dict_in_out"):
        key = options.get("output_name", "loss")

        def dict_loss(output: Any, batch: Any) -> torch.Tensor:
            loss: torch.Tensor = output[key] if isinstance(output, dict) else output[0]
            return loss

        return dict_loss
    kind = options.get("lossfn", "xent")
    flatten = bool(options.get("flatten_output"))

    def loss(output: torch.Tensor, batch: Any) -> torch.Tensor:
        target = batch[1]
        if flatten:
            output = output.view(-1, output.shape[-1])
        if kind == "xent":
            return F.cross_entropy(output, target)
        if kind == "mse":
            return F.mse_loss(output, F.one_hot(target, num_classes=output.size(-1)).float())
        return F.nll_loss(output, target)

    return loss


def _plan_for(model: nn.Module, family: str, mup: bool) -> Plan:
    if mup:
        state = state_of(model)
        if state is None:
            raise MupCompatError(
                "a model from `models` has no base shapes: call set_base_shapes(model, base) "
                "in the function that builds it (or pass mup=False for a standard model)"
            )
        return state.plan(family)
    infshapes = {
        k: InfShape(InfDim(None, d) for d in v) for k, v in extract_shapes(model, "model").items()
    }
    return identity_plan(model, infshapes, {name: name for name in infshapes}, family)


# -------------------------------------------------------------------------------- plotting
def plot_coord_data(
    df: Any,
    y: str = "l1",
    save_to: str | None = None,
    suptitle: str | None = None,
    x: str = "width",
    hue: str = "module",
    legend: str | bool = "full",
    name_contains: str | None = None,
    name_not_contains: str | None = None,
    loglog: bool = True,
    logbase: int = 2,
    face_color: str | None = None,
) -> Any:
    """Drop-in for ``mup.coord_check.plot_coord_data``, drawn with matplotlib alone.

    As mup: one panel per step ``t`` (``5·T × 4`` inches), one line per ``hue`` value (the
    root row ``''`` dropped; numeric module names, as in an ``nn.Sequential``, in numeric
    order), ``name_contains`` / ``name_not_contains`` as pandas regular expressions, the legend
    on the first panel, log-log axes in base ``logbase``, and "coord check plot saved to ..."
    printed when saving. Repeated rows (seeds) are averaged, with their min–max as a band
    (seaborn, which mup uses, draws a bootstrap confidence band instead).
    """
    import matplotlib.pyplot as plt

    if y not in df.columns:
        raise MupCompatError(
            f"column {y!r} is not in the data (columns: {', '.join(map(str, df.columns))}); "
            "get_coord_data records 'l1' unless output_fdict asks for other statistics"
        )
    if "module" in df.columns:  # mup's filters read the module column, whatever the hue
        df = df[df["module"] != ""]  # the root module repeats the last layer's output
        if name_contains is not None:
            df = df[df["module"].astype(str).str.contains(name_contains)]
        elif name_not_contains is not None:
            df = df[~df["module"].astype(str).str.contains(name_not_contains)]
    steps = list(df["t"].unique())
    if not steps:
        raise MupCompatError("nothing to plot: no rows left after filtering")
    labels = list(dict.fromkeys(df[hue]))
    numeric = _numeric_order(labels)
    if numeric is not None:
        labels = numeric
    fig = plt.figure(figsize=(5 * len(steps), 4))
    if face_color is not None:
        fig.patch.set_facecolor(face_color)
    for index, t in enumerate(steps, 1):
        ax = fig.add_subplot(1, len(steps), index)
        at_t = df[df["t"] == t]
        for label in labels:
            series = at_t[at_t[hue] == label].groupby(x)[y]
            mean = series.mean()
            if mean.empty:
                continue
            (line,) = ax.plot(mean.index, mean.values, label=str(label))
            low, high = series.min(), series.max()
            if (high > low).any():
                ax.fill_between(
                    mean.index, low.values, high.values, alpha=0.2, lw=0, color=line.get_color()
                )
        ax.set_title(f"t={t}")
        ax.set_xlabel(x)
        ax.set_ylabel(y if index == 1 else "")
        if loglog:
            ax.set_xscale("log", base=logbase)
            ax.set_yscale("log", base=logbase)
        if legend and index == 1:
            ax.legend(title=hue, fontsize="x-small")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    if save_to is not None:
        fig.savefig(save_to)
        print(f"coord check plot saved to {save_to}")
    return fig


def _numeric_order(labels: list[Any]) -> list[Any] | None:
    """The labels sorted by number when every one is a number (``nn.Sequential`` names)."""
    try:
        keyed = [(float(label), label) for label in labels]
    except (TypeError, ValueError):
        return None
    return [label for _, label in sorted(keyed, key=lambda item: item[0])]


def example_plot_coord_check(*args: Any, **kwargs: Any) -> Any:
    """mup's demo needs ``mup.test``'s models and downloads CIFAR-10; neither ships here."""
    raise MupCompatError(
        "example_plot_coord_check is mup's demo on CIFAR-10 with the models of mup's own test "
        "package, which the compat layer does not ship (and nothing is downloaded). Build your "
        "models, then call get_coord_data(models, loader, ...) and plot_coord_data(df)."
    )
