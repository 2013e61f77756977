"""Trainer states stored without pickle (``common.safe_checkpoints``): exact round trips, refusals, resuming."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from common.safe_checkpoints import from_safe, load_state, random_states, save_state, set_random_states, to_safe


def test_nested_states_round_trip_with_key_types_tuples_arrays_and_tensor_dtypes(tmp_path):
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}, 7: {"mask": torch.tensor([True])}},
             "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 7], "name": None, "amsgrad": False}],
             "bytes": torch.arange(5, dtype=torch.uint8), "array": np.arange(4, dtype=np.uint32),
             "numpy_scalar": np.float64(2.5), "inf": math.inf}
    save_state(state, str(tmp_path), "optimizer")
    loaded = load_state(str(tmp_path), "optimizer")
    assert set(loaded["state"]) == {0, 7}  # integer keys stay integers
    assert torch.equal(loaded["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert loaded["state"][0]["step"].dtype == torch.float32 and loaded["state"][7]["mask"].dtype == torch.bool
    assert loaded["param_groups"][0]["betas"] == (0.9, 0.999)  # a tuple again, not a list
    assert loaded["bytes"].dtype == torch.uint8 and torch.equal(loaded["bytes"], state["bytes"])
    assert loaded["array"].dtype == np.uint32 and np.array_equal(loaded["array"], state["array"])
    assert loaded["numpy_scalar"] == 2.5 and loaded["inf"] == math.inf
    assert sorted(path.name for path in tmp_path.iterdir()) == ["optimizer.json", "optimizer.safetensors"]


def test_a_state_that_needs_pickle_is_refused_by_type():
    with pytest.raises(TypeError, match="cannot store a set"):
        to_safe({"a": {1, 2}}, {})
    assert from_safe(to_safe([1, "x", None], {}), {}) == [1, "x", None]


def test_an_optimizer_restored_from_the_stored_state_takes_the_same_next_step(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    inputs = torch.randn(8, 4)

    def step(net: torch.nn.Module, opt: torch.optim.Optimizer, sched) -> None:
        opt.zero_grad()
        net(inputs).pow(2).mean().backward()
        opt.step()
        sched.step()

    for _ in range(2):
        step(model, optimizer, scheduler)
    save_state(optimizer.state_dict(), str(tmp_path), "optimizer")
    save_state(scheduler.state_dict(), str(tmp_path), "scheduler")
    copy = torch.nn.Linear(4, 2)
    copy.load_state_dict(model.state_dict())
    copy_optimizer = torch.optim.AdamW(copy.parameters(), lr=0.1)
    copy_scheduler = torch.optim.lr_scheduler.LambdaLR(copy_optimizer, lambda step: 1.0 / (step + 1))
    copy_optimizer.load_state_dict(load_state(str(tmp_path), "optimizer"))
    copy_scheduler.load_state_dict(load_state(str(tmp_path), "scheduler"))
    step(model, optimizer, scheduler)
    step(copy, copy_optimizer, copy_scheduler)
    assert copy_scheduler.get_last_lr() == scheduler.get_last_lr()
    assert torch.equal(copy.weight, model.weight) and torch.equal(copy.bias, model.bias)


def test_restored_random_states_repeat_the_same_draws(tmp_path):
    save_state(random_states(), str(tmp_path), "rng_state")
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_random_states(load_state(str(tmp_path), "rng_state"))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])
