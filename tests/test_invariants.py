"""The plan keeps working through deepcopy, pickle, state_dict, to_empty and torch.compile."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import mutransfer as mt
from conftest import make_gpt, on_meta


def explicit_tied_gpt(width: int = 64):
    """A model with every kind of explicit multiplier: tied readout, input hook, attention."""
    model = make_gpt(width, tie_embeddings=True)
    plan = mt.parametrize(
        model,
        on_meta(make_gpt, 32, tie_embeddings=True),
        "mup",
        "adamw",
        mode="explicit",
        seed=0,
        input_multiplier=2.0,
    )
    return model, plan


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(seed))


def one_step(model, plan) -> float:
    opt = torch.optim.AdamW(plan.param_groups(1e-2, model=model))
    x = tokens()
    loss = model.loss(x, x)
    loss.backward()
    opt.step()
    return model.loss(x, x).item()


def test_deepcopy_keeps_multipliers_and_plan() -> None:
    model, plan = explicit_tied_gpt()
    clone = copy.deepcopy(model)
    torch.testing.assert_close(clone(tokens()), model(tokens()))
    plan_clone = copy.deepcopy(plan)
    assert plan_clone.tensors == plan.tensors
    assert one_step(clone, plan_clone) == pytest.approx(one_step(model, plan), rel=1e-6)


def test_pickle_model_and_plan() -> None:
    model, plan = explicit_tied_gpt()
    model2 = pickle.loads(pickle.dumps(model))
    plan2 = pickle.loads(pickle.dumps(plan))
    assert plan2.model is None  # no live model after unpickling ...
    with pytest.raises(mt.PlanError, match="not bound"):
        plan2.param_groups(1e-3)
    plan2.bind(model2)  # ... until bound again
    torch.testing.assert_close(model2(tokens()), model(tokens()))
    assert one_step(model2, plan2) == pytest.approx(one_step(model, plan), rel=1e-6)


def test_json_and_state_dict_round_trip(tmp_path) -> None:
    model, plan = explicit_tied_gpt()
    path = tmp_path / "plan.json"
    plan.to_json(str(path))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    # a new process would do this: build the model, load plan and weights, attach
    fresh = make_gpt(64, tie_embeddings=True)
    loaded = mt.Plan.from_json(str(path))
    assert loaded.tensors == plan.tensors and loaded.module_scales == plan.module_scales
    loaded.bind(fresh).attach()
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    torch.testing.assert_close(fresh(tokens()), model(tokens()))
    assert one_step(fresh, loaded) == pytest.approx(one_step(model, plan), rel=1e-6)


def test_to_empty_from_meta_gives_the_same_init() -> None:
    reference, _ = explicit_tied_gpt()
    model = on_meta(make_gpt, 64, tie_embeddings=True)
    plan = mt.parametrize(
        model,
        on_meta(make_gpt, 32, tie_embeddings=True),
        "mup",
        "adamw",
        mode="explicit",
        input_multiplier=2.0,
    )
    model.to_empty(device="cpu")
    plan.init_(model, seed=0)
    for (name, a), (_, b) in zip(
        reference.state_dict().items(), model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    torch.testing.assert_close(model(tokens()), reference(tokens()))


def test_compile_fullgraph_same_outputs_and_param_groups() -> None:
    model, plan = explicit_tied_gpt()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(tokens()), model(tokens()))
    explanation = torch._dynamo.explain(model)(tokens())
    assert explanation.graph_break_count == 0
    groups = plan.param_groups(1e-3, model=compiled)  # names carry "_orig_mod."
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_reparametrize_is_idempotent() -> None:
    model, _ = explicit_tied_gpt()
    out = model(tokens())
    mt.parametrize(
        model,
        on_meta(make_gpt, 32, tie_embeddings=True),
        "mup",
        "adamw",
        mode="explicit",
        init=False,
        input_multiplier=2.0,
    )
    torch.testing.assert_close(model(tokens()), out)  # hooks were replaced, not stacked
