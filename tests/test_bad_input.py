"""Bad input is caught where it is given, with a message that names what is wrong.

Each case once passed validation and failed later — in a worker process, in the middle of a run,
or as a traceback from deep inside torch, Optuna or json.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

import mutransfer as mt
from conftest import make_gpt, on_meta
from mutransfer.sweep.config import ConfigError as SweepConfigError
from mutransfer.sweep.config import load_config
from mutransfer.training.config import ConfigError, RunConfig, load
from test_sweep_support import CLI


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


SWEEP = """
[sweep]
name = "{name}"
widths = {widths}
objective = "objective.py:objective"
{extra}
[sweep.space]
lr = {space}
"""

OBJECTIVE = """
def objective(params, width, trial):
    return {value}
"""


def sweep_file(tmp_path: Path, name: str = "s", *, widths: str = "[8, 16]", extra: str = "",
               space: str = "{ log2 = [-8, -7] }", value: str = "1.0 / width") -> Path:  # fmt: skip
    write(tmp_path / "objective.py", OBJECTIVE.format(value=value))
    text = SWEEP.format(name=name, widths=widths, extra=extra, space=space)
    return write(tmp_path / f"{name}.toml", text)


def cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    proc = subprocess.run([*CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- sweeps
def test_a_pruner_option_optuna_does_not_take_is_named_at_load(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, extra='pruner = { kind = "median", n_startup = 3 }')
    with pytest.raises(SweepConfigError, match=r"sweep\.pruner: .*'n_startup'.*MedianPruner"):
        load_config(path)


def test_every_width_of_a_builtin_sweep_must_split_into_the_heads(tmp_path: Path) -> None:
    text = '[sweep]\nname = "h"\nwidths = [32, 30]\n[sweep.space]\nlr = { log2 = [-8, -7] }\n'
    path = write(tmp_path / "h.toml", text + "[train]\nn_heads = 4\n")
    with pytest.raises(SweepConfigError, match="at width 30.*not divisible by n_heads 4"):
        load_config(path)
    nested = write(tmp_path / "n.toml", text.replace("30", "64") + "[sweep.train]\nsteps = 2\n")
    with pytest.raises(SweepConfigError, match=r"top-level \[train\] table"):
        load_config(nested)


def test_a_changed_categorical_space_says_what_changed_and_how_to_start_anew(
    tmp_path: Path,
) -> None:
    path = sweep_file(tmp_path, widths="[8]", space="{ values = [0.01, 0.02] }")
    assert cli(tmp_path, "sweep", path.name)[0] == 0
    path.write_text(path.read_text().replace("0.02", "0.03"))
    code, out = cli(tmp_path, "sweep", path.name)
    assert code == 2 and "Traceback" not in out
    assert "values [0.01, 0.02] → values [0.01, 0.03]" in out and "new name" in out


def test_transfer_when_every_trial_diverged_says_so(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, widths="[8]", value='float("nan")')
    assert cli(tmp_path, "sweep", path.name)[0] == 0
    code, out = cli(tmp_path, "transfer", path.name, "--to-width", "32")
    assert code == 2 and "every trial of sweep 's' diverged" in out and "Lower" in out


def test_output_folders_that_cannot_be_made_are_one_line(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, widths="[8]")
    assert cli(tmp_path, "sweep", path.name)[0] == 0
    write(tmp_path / "taken", "a file where a folder should be")
    for args in (["report", path.name], ["transfer", path.name, "--to-width", "32"]):
        code, out = cli(tmp_path, *args, "--out", "taken/out")
        assert code == 2 and "Traceback" not in out, out
        assert "cannot create the output folder taken/out" in out


def test_transfer_to_a_width_the_heads_do_not_divide(tmp_path: Path) -> None:
    text = (
        '[sweep]\nname = "g"\nwidths = [8, 16]\n[sweep.space]\nlr = { log2 = [-8, -8] }\n'
        "[train]\nn_heads = 2\nsteps = 2\nseq_len = 8\nbatch_size = 2\neval_batches = 1\n"
        'eval_batch_size = 2\ndata = "pydoc"\n'
    )
    write(tmp_path / "g.toml", text)
    assert cli(tmp_path, "sweep", "g.toml")[0] == 0
    code, out = cli(tmp_path, "transfer", "g.toml", "--to-width", "33")
    assert code == 2 and "Traceback" not in out
    assert "--to-width 33: " in out and "not divisible by n_heads 2" in out


# ------------------------------------------------------------------------ train config
@pytest.mark.parametrize(
    ("option", "message"),
    [
        ('rules = "mupp"', "unknown rules preset 'mupp'"),
        ('data = "no/such.txt"', "the text file 'no/such.txt' does not exist"),
        ("width = 60\nn_heads = 8", "width 60 is not divisible by n_heads 8"),
        ('lr = "0.01"', "lr must be a number, got '0.01'"),
        ("steps = 2.5", "steps must be an integer"),
    ],
)
def test_train_config_errors_at_load(tmp_path: Path, option: str, message: str) -> None:
    path = write(tmp_path / "run.toml", f"base_width = 32\n{option}\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load(path)


def test_allow_changes_names_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow_changes: unknown field"):
        RunConfig(allow_changes=("lrr",))


# ------------------------------------------------------------------------------- API
def test_api_arguments_of_the_wrong_kind_are_named() -> None:
    model = make_gpt(64)
    base = on_meta(make_gpt, 32)
    with pytest.raises(TypeError, match="needs the model as an nn.Module, got str"):
        mt.parametrize("gpt", base)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rules must be a preset name .* got None"):
        mt.parametrize(model, base, rules=None)  # type: ignore[arg-type]
    plan = mt.parametrize(model, base)
    with pytest.raises(TypeError, match="lr must be a number, got '1e-3'"):
        plan.param_groups(lr="1e-3")  # type: ignore[arg-type]


def test_plan_from_json_names_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    plan = mt.parametrize(make_gpt(64), on_meta(make_gpt, 32), init=False)
    cut = write(tmp_path / "cut.json", plan.to_json()[:400])
    with pytest.raises(mt.PlanError, match=r"cut\.json' is not a plan: not valid JSON.*cut short"):
        mt.Plan.from_json(str(cut))
    partial = write(tmp_path / "partial.json", json.dumps({"format": "mutransfer.plan/1"}))
    with pytest.raises(mt.PlanError, match=r"partial\.json': the plan lacks rules"):
        mt.Plan.from_json(str(partial))
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes(range(256)))
    with pytest.raises(mt.PlanError, match=r"noise\.bin' is not a plan"):
        mt.Plan.from_json(str(noise))
    assert mt.Plan.from_json(plan.to_json()).tensors == plan.tensors


def test_param_groups_keeps_accepting_numbers() -> None:
    model = make_gpt(64)
    plan = mt.parametrize(model, on_meta(make_gpt, 32))
    groups = plan.param_groups(lr=1, weight_decay=0)  # ints are numbers too
    assert torch.optim.AdamW(groups).param_groups[0]["lr"] > 0


# ------------------------------------------------------------------------- coord-check
@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def make(width):\n    return (\n", r"syn\.py has a syntax error at line 2"),
        (
            "import torch\ndef make(width, depth):\n    return torch.nn.Linear(width, width)\n",
            r"syn\.py:make must take one argument, the width .* signature is \(width, depth\)",
        ),
        ("raise RuntimeError('no GPU here')\n", r"running syn\.py failed: RuntimeError: no GPU"),
    ],
)
def test_coord_check_factory_files_that_cannot_work(
    tmp_path: Path, source: str, message: str
) -> None:
    write(tmp_path / "syn.py", source)
    code, out = cli(tmp_path, "coord-check", "syn.py:make", "--widths", "32,64", "--no-plot")
    assert code == 2 and "Traceback" not in out, out
    assert re.search(message, out), out
