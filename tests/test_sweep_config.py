"""Sweep configs: search spaces on log2 grids, TOML validation with errors naming the field."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from mutransfer.sweep import ConfigError, Dim, Space, SweepSpec, load_config
from mutransfer.sweep.transfer import toml_dumps

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

GOOD = """
[sweep]
name = "t"
widths = [16, 32]
[sweep.space]
lr = { log2 = [-8, -4] }
[train]
steps = 5
data = "pydoc"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_log2_grid_is_powers_of_two() -> None:
    assert Dim.log2("lr", -8, -4).grid() == [2.0**k for k in range(-8, -3)]
    assert Dim.log2("lr", -4, -2, step=0.5).grid() == pytest.approx(
        [2.0 ** (k / 2) for k in range(-8, -3)]
    )
    # a range that is not a power of two keeps its low end and doubles up to high
    assert Dim.range("init_std", 0.5, 3.0).grid() == [0.5, 1.0, 2.0]
    assert Dim.range("warmup_steps", 1, 100, integer=True).grid() == [1, 2, 4, 8, 16, 32, 64]
    space = Space.of({"lr": {"log2": [-2, -1]}, "schedule": {"values": ["constant", "cosine"]}})
    assert space.grid() == [
        {"lr": 0.25, "schedule": "constant"},
        {"lr": 0.25, "schedule": "cosine"},
        {"lr": 0.5, "schedule": "constant"},
        {"lr": 0.5, "schedule": "cosine"},
    ]


def test_every_grid_point_lies_in_its_distribution() -> None:
    dims = [Dim.range("lr", 1e-3, 0.1), Dim.range("w", 1, 1000, integer=True)]
    for dim in dims:
        dist = dim.distribution()
        assert all(dist._contains(dist.to_internal_repr(p)) for p in dim.grid())


def test_a_good_config_loads_and_round_trips(tmp_path: Path) -> None:
    spec = load_config(write(tmp_path, GOOD))
    assert spec.widths == (16, 32) and spec.points_per_width == 5
    assert spec.train == {"steps": 5, "data": "pydoc"}
    again = SweepSpec.from_dict(spec.to_dict())
    assert again == spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("lr = { log2 = [-8, -4] }", "lr = { low = 'abc', high = 0.1 }"),
            "sweep.space.lr.low: expected a number, got 'abc'",
        ),
        (("lr = { log2 = [-8, -4] }", "lr = { low = 0.1 }"), "sweep.space.lr.high: missing"),
        (
            ("lr = { log2 = [-8, -4] }", "lr = { low = 0.1, high = 0.01 }"),
            "sweep.space.lr: high (0.01) is below low (0.1)",
        ),
        (("lr = { log2 = [-8, -4] }", "lr = { log2 = [-8] }"), "sweep.space.lr.log2: expected"),
        (("lr = { log2 = [-8, -4] }", "lr = { lo = 1 }"), "sweep.space.lr.lo: unknown key"),
        (
            ("widths = [16, 32]", "widths = [16, 'x']"),
            "sweep.widths[1]: expected an integer, got 'x'",
        ),
        (("widths = [16, 32]", "widths = [16, 16]"), "sweep.widths: a width appears twice"),
        (('name = "t"', 'name = "a b"'), "sweep.name: 'a b' is not a usable name"),
        (('name = "t"', 'name = "t"\nsampler = "tpe"'), "sweep.trials: missing"),
        (('name = "t"', 'name = "t"\nsampler = "bayes"'), "sweep.sampler: expected one of"),
        (('name = "t"', 'name = "t"\npruner = "fast"'), "sweep.pruner: expected one of"),
        (('name = "t"', 'name = "t"\nworkers = 2'), "sweep.workers: unknown key"),
        (("steps = 5", "steps = 'five'"), "train.steps: expected an integer, got 'five'"),
        (("steps = 5", "widht = 64"), "train.widht: unknown training option"),
        (("steps = 5", "width = 64"), "train.width: is set by the sweep (sweep.widths)"),
        (
            ("lr = { log2 = [-8, -4] }", "lrr = { log2 = [-8, -4] }"),
            "sweep.space.lrr: not an option of the built-in trainer",
        ),
        (("steps = 5", "lr = 0.1"), "train.lr: is also searched (sweep.space.lr)"),
    ],
)
def test_malformed_config_names_the_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)
    assert "sweep.toml" in str(info.value)  # the file is named too


def test_broken_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[sweep\nname = 1"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"sweep: missing; the file needs a \[sweep\] table"):
        load_config(write(tmp_path, "[train]\nsteps = 1\n"))


def test_custom_objective_configs(tmp_path: Path) -> None:
    text = GOOD.replace('[train]\nsteps = 5\ndata = "pydoc"\n', "").replace(
        'name = "t"', 'name = "t"\nobjective = "obj.py:f"'
    )
    spec = load_config(write(tmp_path, text))
    assert spec.objective == f"{(tmp_path / 'obj.py').resolve()}:f"  # relative to the file
    with pytest.raises(ConfigError, match="train: is only read by the built-in trainer"):
        load_config(write(tmp_path, text + "[train]\nsteps = 3\n"))
    with pytest.raises(ConfigError, match="sweep.objective: expected 'builtin'"):
        load_config(write(tmp_path, GOOD.replace('name = "t"', 'name = "t"\nobjective = "f"')))


def test_example_configs_are_valid() -> None:
    gpt = load_config(EXAMPLES / "sweep_gpt.toml")
    assert gpt.objective == "builtin" and "lr" in gpt.space.names
    custom = load_config(EXAMPLES / "sweep_custom_objective.toml")
    assert custom.objective.endswith("sweep_custom_objective.py:objective")
    assert Path(custom.objective.rsplit(":", 1)[0]).is_file()


def test_toml_writer_round_trips() -> None:
    tables = {
        "train": {"lr": 2.0**-6, "name": 'a "q"', "n": 3, "ok": True, "skip": None, "xs": [1, 2]},
        "transfer": {"loss": math.inf, "params": {"lr": 0.5, "odd key": 1}},
    }
    back = tomllib.loads(toml_dumps(tables))
    assert back["train"] == {"lr": 2.0**-6, "name": 'a "q"', "n": 3, "ok": True, "xs": [1, 2]}
    assert back["transfer"]["loss"] == math.inf
    assert back["transfer"]["params"] == {"lr": 0.5, "odd key": 1}
