"""``mutransfer coord-check``: run the coordinate check on a model factory from the shell.

    mutransfer coord-check gpt --widths 64,128,256,512 --steps 4 --seeds 2 --out coord
    mutransfer coord-check mypkg.models:make_model --rules mup --optimizer sgd --lr 0.1
    mutransfer coord-check gpt --depths 2,4,8 --width 64 --set residual_depth_exponent=-1
    mutransfer coord-check resnet --widths 16,32,64 --optimizer sgd --lr 0.1
    mutransfer coord-check bert --widths 64,128,256

Writes ``coord_check.png`` and ``coord_check.json`` to ``--out``, prints the table, and exits
with status 1 when the check fails — a series blows up, or a layer's own update shrinks like
1/width over the steps (also when any series vanishes, with ``--strict``) — so that it can
guard a CI job. The printed PASS/FAIL is the exit status's own.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from typing import Any, Literal

from ..errors import UserError

BUILTINS = ("gpt", "mlp", "resnet", "bert")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "coord-check",
        help="check that a model is parametrized right: train a few steps at several widths",
        description=(
            "Train FACTORY(width) at several widths for a few steps, fit how every module's "
            "output and every layer's own update scale with width, and say which (if any) "
            "blow up. FACTORY is 'gpt', 'mlp', 'resnet', 'bert' (the reference models; the ResNet "
            "on Fashion-MNIST images, the BERT on masked bytes of Shakespeare), "
            "PACKAGE.MODULE:NAME or "
            "path/to/file.py:NAME, a callable taking the width (the depth with --depths) and "
            "returning an nn.Module (parametrized here with --rules) or (model, plan)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("factory", metavar="FACTORY")
    parser.add_argument("--widths", default="64,128,256,512", help="comma-separated widths")
    parser.add_argument(
        "--depths", default=None, help="vary depth instead: comma-separated numbers of blocks"
    )
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps (default 4)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds to average (default 2)")
    parser.add_argument("--rules", default="mup", help="rules preset or MODULE:NAME of a Rules")
    parser.add_argument("--optimizer", default="adam", choices=("adam", "adamw", "sgd"))
    parser.add_argument("--lr", type=float, default=None, help="base LR (adam 1e-2, sgd 0.1)")
    parser.add_argument("--base-width", type=int, default=None, help="default: smallest size")
    parser.add_argument(
        "--data",
        default=None,
        metavar="MODULE:NAME",
        help="the batch: a callable data(generator) -> batch (called once per seed), or a batch "
        "(inputs, targets) or dict; PACKAGE.MODULE:NAME or FILE.py:NAME (default: a few tokens "
        "of text or Gaussian vectors, see docs/coord-check.md)",
    )
    parser.add_argument(
        "--loss",
        default=None,
        metavar="MODULE:NAME",
        help="a callable loss(output, batch) -> scalar tensor (default: the model's own loss "
        "when its forward takes targets=/labels= or it returns one, else cross-entropy/MSE)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a constant of the rules, e.g. output_multiplier=2 (repeatable)",
    )
    parser.add_argument("--out", default="coord_check", help="output folder")
    parser.add_argument(
        "--device", default=None, help="cpu (default), auto (the GPU if there is one), cuda..."
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="threads training sizes/seeds at once"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also fail when a series vanishes (by default a warning; a layer whose own update "
        "shrinks like 1/width over the steps fails anyway)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the figure")
    parser.add_argument("--all", action="store_true", help="print every series, not only bad")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    builtin = parser.add_argument_group("built-in models (gpt, mlp, resnet, bert)")
    builtin.add_argument(
        "--depth",
        type=int,
        default=None,
        help="blocks (gpt, bert 2) / layers (mlp 3) / blocks per stage (resnet 1)",
    )
    builtin.add_argument("--width", type=int, default=64, help="width when varying depth")
    builtin.add_argument(
        "--heads", type=int, default=2, help="gpt, bert attention heads (default 2)"
    )
    builtin.add_argument(
        "--tie-embeddings", action="store_true", help="gpt, bert: tie the embedding and readout"
    )
    builtin.add_argument(
        "--zero-init-query", action="store_true", help="gpt, bert: zero-init q (TP5)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .check import CoordCheckError, coord_check

    vary: Literal["width", "depth"] = "depth" if args.depths else "width"
    sizes = _int_list(
        args.depths if args.depths else args.widths, "--depths" if args.depths else "--widths"
    )
    constants = _constants(args.set)
    rules = _rules(args.rules)
    factory, parametrize_kwargs = _factory(args, vary, sizes)
    parametrize_kwargs.update(constants)
    data = _load(args.data, "--data") if args.data else _builtin_data(args.factory)
    loss = _load(args.loss, "--loss") if args.loss else None
    if loss is not None and not callable(loss):
        raise UserError(f"--loss {args.loss} is a {type(loss).__name__}, not a callable")
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        report = coord_check(
            factory,
            sizes if vary == "width" else (64, 128),
            depths=sizes if vary == "depth" else None,
            vary=vary,
            steps=args.steps,
            seeds=args.seeds,
            optimizer=args.optimizer,
            lr=args.lr,
            data=data,
            loss=loss,
            rules=rules,
            base_width=args.base_width,
            parametrize_kwargs=parametrize_kwargs,
            strict=args.strict,
            device=args.device,
            workers=args.workers,
            progress=progress,
        )
    except (CoordCheckError, TypeError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    os.makedirs(args.out, exist_ok=True)
    report.settings["factory"] = args.factory
    json_path = os.path.join(args.out, "coord_check.json")
    report.to_json(json_path)
    print(report.table(only_bad=not args.all))
    if not args.no_plot:
        png_path = os.path.join(args.out, "coord_check.png")
        report.plot(png_path)
        print(f"figure: {png_path}")
    print(f"data: {json_path}")
    return 0 if report.ok else 1  # the printed verdict is report.ok's own


# ------------------------------------------------------------------------------- arguments
def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if len(set(values)) < 2 or min(values) < 1:
        raise UserError(f"{flag} needs at least two different positive sizes, got {text!r}")
    return values


def _constants(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--set takes NAME=VALUE, got {pair!r}")
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value
    return out


def _rules(spec: str) -> Any:
    from ..rules import Rules, get_rules

    if ":" in spec:
        obj = _load(spec, "--rules")
        if not isinstance(obj, Rules):
            raise UserError(f"--rules {spec} is a {type(obj).__name__}, not a mutransfer.Rules")
        return obj
    try:
        return get_rules(spec)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _load(spec: str, flag: str = "FACTORY") -> Any:
    """``package.module:name`` or ``path/to/file.py:name``."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise UserError(f"{flag}: expected MODULE:NAME or FILE.py:NAME, got {spec!r}")
    try:
        if where.endswith(".py"):
            if not os.path.isfile(where):
                raise UserError(f"{flag}: no such file: {where}")
            module = _load_file(where)
        else:
            _add_to_path(os.getcwd())  # as `python -m` would: the user's package in the cwd
            module = importlib.import_module(where)
    except ImportError as exc:
        raise UserError(f"{flag}: cannot import {where!r}: {exc}") from exc
    except SyntaxError as exc:
        raise UserError(
            f"{flag}: {where} has a syntax error at line {exc.lineno}: {exc.msg}"
        ) from None
    except UserError:
        raise
    except Exception as exc:  # the user's module failed while it ran
        raise UserError(f"{flag}: running {where} failed: {type(exc).__name__}: {exc}") from exc
    try:
        return getattr(module, name)
    except AttributeError:
        raise UserError(f"{flag}: {where!r} has no attribute {name!r}") from None


def _load_file(path: str) -> Any:
    """Execute a user's ``.py`` file as a module, once per file (factory, data and loss from
    the same file share its classes).

    The module is registered in ``sys.modules`` before it runs, as an import would: without
    that, a ``@dataclass`` in a file with ``from __future__ import annotations`` (nanoGPT's
    config) fails to resolve its own module, and its objects cannot be pickled.
    """
    full = os.path.abspath(path)
    stem = "".join(c if c.isalnum() else "_" for c in os.path.basename(full).removesuffix(".py"))
    name = f"_coord_check_user_{stem}_{hashlib.sha1(full.encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, full)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    _add_to_path(os.path.dirname(full))  # its own imports
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _add_to_path(folder: str) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _factory(
    args: argparse.Namespace, vary: str, sizes: list[int]
) -> tuple[Callable[[int], Any], dict[str, Any]]:
    """The factory and the parametrize() arguments it needs."""
    if args.factory not in BUILTINS:
        obj = _load(args.factory)
        if not callable(obj):
            raise UserError(f"{args.factory} is not callable")
        _check_takes_one_size(obj, args.factory, vary)
        return obj, {}
    from ..build import build_on_meta

    build = _builtin(args)
    kwargs: dict[str, Any] = {}
    if args.factory in ("gpt", "bert") and args.zero_init_query:
        from ..models import GPT, Bert

        kwargs["zero_init"] = (GPT.query_weights if args.factory == "gpt" else Bert.query_weights,)
    if args.factory in ("resnet", "bert"):
        from ..models import Bert, ResNet

        model_class = ResNet if args.factory == "resnet" else Bert
        kwargs["residual_branches"] = model_class.residual_branches
    if vary == "width":
        for width in sizes:
            _check_builtin(args, width)
        return (lambda width: build(width, args.depth)), kwargs
    _check_builtin(args, args.width)
    base_depth = args.base_width or min(sizes)
    kwargs["delta"] = build_on_meta(lambda depth: build(2 * args.width, depth), base_depth)
    return (lambda depth: build(args.width, depth)), kwargs


def _check_takes_one_size(factory: Callable[..., Any], name: str, vary: str) -> None:
    """The factory is called as ``factory(width)`` (``factory(depth)``): say so up front."""
    import inspect

    try:
        inspect.signature(factory).bind(64)
    except TypeError:
        raise UserError(
            f"{name} must take one argument, the {vary} (it is called as {name.split(':')[-1]}"
            f"(64)), and return an nn.Module or (model, plan); its signature is "
            f"{inspect.signature(factory)}"
        ) from None
    except ValueError:  # a builtin without a signature: let the call say what is wrong
        return


def _builtin(args: argparse.Namespace) -> Callable[[int, int | None], Any]:
    from ..models import GPT, MLP, Bert, BertConfig, GPTConfig, ResNet, ResNetConfig

    if args.factory == "resnet":  # the demo's ResNet (training.reference.RESNET)
        return lambda width, depth: ResNet(
            ResNetConfig(width=width, depth=depth or 1, stage_ratios=(1, 2, 4), stem_stride=2)
        )
    if args.factory == "bert":
        return lambda width, depth: Bert(
            BertConfig(
                width=width,
                depth=depth or 2,
                n_heads=args.heads,
                seq_len=64,
                tie_embeddings=args.tie_embeddings,
            )
        )
    if args.factory == "gpt":
        return lambda width, depth: GPT(
            GPTConfig(
                width=width,
                depth=depth or 2,
                n_heads=args.heads,
                seq_len=64,
                tie_embeddings=args.tie_embeddings,
            )
        )
    return lambda width, depth: MLP(width=width, depth=depth or 3)


def _check_builtin(args: argparse.Namespace, width: int) -> None:
    if args.factory in ("gpt", "bert") and width % args.heads:
        raise UserError(f"width {width} is not divisible by --heads {args.heads}")


def _builtin_data(factory: str) -> Callable[[Any], Any] | None:
    """The batch of a built-in model whose default would not fit it (None: the default).

    As the default batch, small on purpose (µP's limit is width → ∞ at a fixed batch): the
    ResNet gets 4 Fashion-MNIST training images (Gaussian noise images when the data is not
    installed), the BERT 4 windows of 16 bytes of Shakespeare (random bytes without it) with
    half the positions masked by BERT's recipe (``models.bert.mask_tokens``), so that a few
    positions per window are predicted.
    """
    if factory == "resnet":
        return _fashion_mnist_batch
    if factory == "bert":
        return _masked_text_batch
    return None


def _fashion_mnist_batch(generator: Any) -> tuple[Any, Any]:
    import torch

    from ..data import fashion_mnist_images

    try:
        return fashion_mnist_images().batch("train", 4, generator)
    except FileNotFoundError:  # DataNotFoundError: not installed
        images = torch.randn(4, 1, 28, 28, generator=generator)
        return images, torch.randint(0, 10, (4,), generator=generator)


def _masked_text_batch(generator: Any) -> tuple[Any, Any]:
    import torch

    from ..data import shakespeare
    from ..models import mask_tokens

    try:
        tokens = shakespeare().batch("train", 4, 16, generator)[0]
    except (ImportError, FileNotFoundError):
        tokens = torch.randint(0, 256, (4, 16), generator=generator)
    return mask_tokens(tokens, generator, rate=0.5)
