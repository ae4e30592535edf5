"""``get_coord_data`` / ``plot_coord_data`` with mup's signatures, run by ``mutransfer.coord``.

mup's coordinate check records the mean |x| ('l1') of every module's output and leaves the
reading of a plot to the user. Here the same call runs mutransfer's check, which records, per
module and step, the RMS ('l2' in mup's vocabulary) of the output, of the module's own update
term ΔW·x and of attention logits, and *judges* them: the returned DataFrame carries the verdict
in ``df.attrs["report"]`` (a ``mutransfer.coord.CoordReport``: ``.ok``, ``.summary()``).

Mapping of mup's options: ``nsteps`` forward passes (t = 1..nsteps, the first before any update,
as in mup); ``nseeds`` seeds 0..nseeds-1; ``fix_data`` (first batch repeated) or the first
``nsteps`` batches; ``flatten_input``/``flatten_output``/``lossfn``/``dict_in_out``/
``output_name`` as in mup; ``filter_module_by_name``/``filter_trainable_by_name`` as in mup;
``cuda`` uses the GPU only when there is one. ``mup=False`` trains with one LR for every tensor.
Statistics other than 'l2' (``output_fdict`` etc.) are not recorded: asking for them raises.

Needs pandas (the DataFrame) and, for the plot, matplotlib.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ... import Plan
from .plans import _identity_plan
from .shape import _extract
from .state import MupCompatError, state_of

_DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}
_OPTIONS = {
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


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("get_coord_data returns a pandas DataFrame: pip install pandas") from None
    return pandas


def _check_fdicts(options: Mapping[str, Any]) -> None:
    out = options.get("output_fdict")
    if out is not None and set(out) != {"l2"}:
        raise MupCompatError(
            f"output_fdict={dict(out)!r}: mutransfer's coordinate check records the RMS of "
            "each module's output ('l2'), its update term and attention logits; drop "
            "output_fdict (or pass {'l2': 'l2'})"
        )
    for name in ("input_fdict", "param_fdict"):
        if options.get(name):
            raise MupCompatError(
                f"{name} is not supported: the check records module outputs and update terms"
            )


def _loss_fn(options: Mapping[str, Any]) -> Callable[[Any, Any], torch.Tensor]:
    if options.get("dict_in_out"):
        key = options.get("output_name", "loss")

        def dict_loss(output: Any, batch: Any) -> torch.Tensor:
            loss: torch.Tensor = output[key] if isinstance(output, dict) else output[0]
            return loss

        return dict_loss
    kind = options.get("lossfn", "xent")
    flatten = bool(options.get("flatten_output"))
    if kind not in ("xent", "mse", "nll"):
        raise MupCompatError(f"lossfn must be 'xent', 'mse' or 'nll', got {kind!r}")

    def loss(output: torch.Tensor, batch: Any) -> torch.Tensor:
        target = batch[1]
        if flatten:
            output = output.view(-1, output.shape[-1])
        if kind == "xent":
            return F.cross_entropy(output, target)
        if kind == "mse":
            one_hot = F.one_hot(target, num_classes=output.size(-1)).float()
            return F.mse_loss(output, one_hot)
        return F.nll_loss(output, target)

    return loss


def _batches(dataloader: Iterable[Any], options: Mapping[str, Any], nsteps: int) -> Any:
    flatten = bool(options.get("flatten_input")) and not options.get("dict_in_out")

    def prepare(batch: Any) -> Any:
        if flatten:
            data, target = batch
            return (data.view(data.size(0), -1), target)
        return tuple(batch) if isinstance(batch, list) else batch

    it = iter(dataloader)
    if options.get("fix_data", True):
        return prepare(next(it))
    return [prepare(b) for _, b in zip(range(nsteps), it, strict=False)]


def get_coord_data(
    models: Mapping[Any, Callable[[], nn.Module]],
    dataloader: Iterable[Any],
    optimizer: str = "sgd",
    lr: float | None = None,
    mup: bool = True,
    filter_trainable_by_name: Callable[[str], bool] | None = None,
    **kwargs: Any,
) -> Any:
    """Drop-in for ``mup.coord_check.get_coord_data``; see the module docstring.

    ``models`` maps widths to functions building the model (after ``set_base_shapes`` when
    ``mup=True``). Returns a DataFrame with columns width, module, t, seed, quantity, l2,
    optimizer, lr (update terms appear as module ``"<name>:update"``), and the verdict in
    ``df.attrs["report"]``.
    """
    from ...coord import coord_check

    unknown = sorted(set(kwargs) - _OPTIONS)
    if unknown:
        raise TypeError(f"get_coord_data() got unexpected keyword argument(s): {unknown}")
    _check_fdicts(kwargs)
    if optimizer not in _DEFAULT_LR:
        raise MupCompatError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {optimizer!r}")
    lr = _DEFAULT_LR[optimizer] if lr is None else lr
    family = "sgd" if optimizer == "sgd" else "adam"
    nsteps = int(kwargs.get("nsteps", 3))
    if nsteps < 1:
        raise MupCompatError(f"nsteps must be at least 1, got {nsteps}")
    by_width = {int(w): build for w, build in models.items()}
    device = "cuda" if kwargs.get("cuda", True) and torch.cuda.is_available() else "cpu"

    def factory(width: int) -> tuple[nn.Module, Plan]:
        model = by_width[width]()
        if filter_trainable_by_name is not None:
            for name, p in model.named_parameters():
                p.requires_grad_(bool(filter_trainable_by_name(name)))
        return model, _plan_for(model, family, mup)

    modules = None
    keep = kwargs.get("filter_module_by_name")
    if keep is not None:
        probe = by_width[min(by_width)]()
        modules = [n for n, _ in probe.named_modules() if n and keep(n)]
        if not modules:
            raise MupCompatError("filter_module_by_name kept no module")

    report = coord_check(
        factory,
        sorted(by_width),
        steps=max(1, nsteps - 1),
        seeds=int(kwargs.get("nseeds", 1)),
        optimizer=optimizer,
        lr=lr,
        data=_batches(dataloader, kwargs, nsteps),
        loss=_loss_fn(kwargs),
        modules=modules,
        device=device,
        progress=print if kwargs.get("show_progress", True) else None,
    )
    df = _frame(report, nsteps)
    df["optimizer"] = optimizer
    df["lr"] = lr
    df.attrs["report"] = report
    return df


def _plan_for(model: nn.Module, family: str, mup: bool) -> Plan:
    if mup:
        state = state_of(model)
        if state is None:
            raise MupCompatError(
                "a model from `models` has no base shapes: call set_base_shapes(model, base) "
                "in the function that builds it (or pass mup=False for a standard model)"
            )
        return state.plan(family)
    infshapes = {k: _no_width(v) for k, v in _extract(model, "model").items()}
    aliases = {name: name for name in infshapes}
    return _identity_plan(model, infshapes, aliases, family)


def _no_width(shape: list[int]) -> Any:
    from .infshape import InfDim, InfShape

    return InfShape(InfDim(None, d) for d in shape)


def _frame(report: Any, nsteps: int) -> Any:
    rows = []
    for (module, quantity), per_step in report.values.items():
        label = module if quantity == "out" else f"{module}:{quantity}"
        for t, per_size in enumerate(per_step):
            if t + 1 > nsteps:
                continue
            for width, per_seed in zip(report.sizes, per_size, strict=True):
                for seed, value in zip(report.seeds, per_seed, strict=True):
                    if value is not None:
                        rows.append(
                            {
                                "width": width,
                                "module": label,
                                "t": t + 1,
                                "seed": seed,
                                "quantity": quantity,
                                "l2": value,
                            }
                        )
    return _pandas().DataFrame(rows)


def plot_coord_data(
    df: Any,
    y: str = "l2",
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
    """Drop-in for ``mup.coord_check.plot_coord_data`` (matplotlib only, no seaborn).

    One panel per step t, one line per module (mean over seeds). The default ``y`` is 'l2'
    (RMS), the statistic ``get_coord_data`` records here.
    """
    import matplotlib.pyplot as plt

    if y not in df.columns:
        raise MupCompatError(
            f"column {y!r} is not in the data (columns: {', '.join(map(str, df.columns))}); "
            "mutransfer's coordinate check records the RMS as 'l2'"
        )
    df = df[df[hue] != ""]
    if name_contains is not None:
        df = df[df[hue].astype(str).str.contains(name_contains, regex=False)]
    elif name_not_contains is not None:
        df = df[~df[hue].astype(str).str.contains(name_not_contains, regex=False)]
    steps = sorted(df["t"].unique())
    if not steps:
        raise MupCompatError("nothing to plot: no rows left after filtering")
    fig, axes = plt.subplots(1, len(steps), figsize=(5 * len(steps), 4), squeeze=False)
    if face_color is not None:
        fig.patch.set_facecolor(face_color)
    for ax, t in zip(axes[0], steps, strict=True):
        at_t = df[df["t"] == t]
        for label, series in at_t.groupby(hue, sort=False):
            mean = series.groupby(x)[y].mean()
            ax.plot(mean.index, mean.values, marker="o", label=str(label))
        ax.set_title(f"t={t}")
        ax.set_xlabel(x)
        ax.set_ylabel(y if t == steps[0] else "")
        if loglog:
            ax.set_xscale("log", base=logbase)
            ax.set_yscale("log", base=logbase)
        if legend and t == steps[0]:
            ax.legend(fontsize="x-small")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    if save_to is not None:
        fig.savefig(save_to)
    return fig
