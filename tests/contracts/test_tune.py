"""The tune contract refuses a bad search space up front, naming the key."""

from __future__ import annotations

import pytest

from contracts import ContractError, get_contract

CONTRACT = get_contract("tune")


def parse(**raw):
    return CONTRACT.parse_hyperparameters(raw)


def test_defaults_are_a_valid_search_over_train_seg():
    hp = parse()
    assert set(hp.search_space) == {"lr", "weight_decay", "batch_size"}
    assert hp.register_model is False and hp.storage is None


def test_sagemaker_string_values_decode_into_the_search_space():
    hp = parse(search_space='{"optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},'
                            ' "batch_size": {"type": "int", "low": 2, "high": 8, "step": 2}}',
               n_trials="3", enqueue_trials='[{"optimizer": "sgd"}]')
    assert hp.search_space["optimizer"].choices == ["adam", "sgd"] and hp.n_trials == 3
    assert hp.search_space["batch_size"].values_to_check() == [2, 8]


@pytest.mark.parametrize(("space", "message"), [
    ({"lrr": {"type": "float", "low": 1e-3, "high": 1e-2}}, "key 'lrr': not a train-seg hyperparameter"),
    ({"n_trials": {"type": "int", "low": 1, "high": 4}}, "key 'n_trials': not a train-seg hyperparameter"),
    ({"lr": {"type": "float", "low": 1e-3, "high": 20}}, "key 'lr': value 20.0 is not a valid lr"),
    ({"batch_size": {"type": "int", "low": 0, "high": 8}}, "key 'batch_size': value 0 is not a valid batch_size"),
    ({"batch_size": {"type": "float", "low": 1, "high": 8}}, "key 'batch_size': type float does not suit"),
    ({"optimizer": {"type": "int", "low": 1, "high": 2}}, "key 'optimizer': type int does not suit"),
    ({"optimizer": {"type": "categorical", "choices": ["adam", "lion"]}}, "value 'lion' is not a valid optimizer"),
    ({"lr": {"type": "float", "low": 0, "high": 1e-2, "log": True}}, "'search_space.lr'"),
    ({"lr": {"type": "float", "low": 1e-2, "high": 1e-3}}, "low 0.01 is above high 0.001"),
    ({"lr": {"type": "categorical", "choices": []}}, "non-empty 'choices'"),
    ({"lr": {"type": "float", "low": 1e-3}}, "needs 'low' and 'high'"),
    ({"batch_size": {"type": "int", "low": 2, "high": 8.5}}, "whole-number"),
    ({"lr": {"type": "normal", "low": 1e-3, "high": 1e-2}}, "'search_space.lr.type'"),
    ({"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "mean": 1}}, "'search_space.lr.mean'"),
    ({}, "search_space is empty"),
])
def test_bad_search_space_names_the_key(space, message):
    with pytest.raises(ContractError) as error:
        parse(search_space=space)
    assert message in str(error.value).splitlines()[0]


@pytest.mark.parametrize(("trials", "message"), [
    ([{"momentum": 0.5}], "enqueue_trials[0] key 'momentum': not in search_space"),
    ([{"lr": 3e-3}, {"lr": 1.0}], "enqueue_trials[1] key 'lr': value 1.0 is outside"),
    ([{"batch_size": "eight"}], "enqueue_trials[0] key 'batch_size': value 'eight' is outside"),
])
def test_enqueued_trials_must_fit_the_space(trials, message):
    with pytest.raises(ContractError) as error:
        parse(enqueue_trials=trials)
    assert message in str(error.value).splitlines()[0]


def test_storage_url_never_carries_a_password():
    assert parse(storage="postgresql://optuna@db:5432/studies").storage == "postgresql://optuna@db:5432/studies"
    with pytest.raises(ContractError, match="'storage'.*holds a password.*OPTUNA_STORAGE"):
        parse(storage="postgresql://optuna:hunter22@db:5432/studies")
    for hidden in ("postgresql://optuna:pa/ss99@db:5432/studies",  # a '/' in it used to let it through
                   "postgresql://optuna@db:5432/studies?password=hunter22"):
        with pytest.raises(ContractError, match="'storage'.*holds a password"):
            parse(storage=hidden)
    for plain in ("sqlite:///runs/with@sign/optuna.db", "postgresql://h:5432/db?application_name=me@x"):
        assert parse(storage=plain).storage == plain
    with pytest.raises(ContractError, match="'storage'.*not a database URL"):
        parse(storage="optuna.db")


def test_heartbeat_grace_must_exceed_the_beat():
    assert (parse().heartbeat_s, parse().heartbeat_grace_s) == (60, 180)
    assert parse(heartbeat_s=1, heartbeat_grace_s=3).heartbeat_grace_s == 3
    with pytest.raises(ContractError, match="'heartbeat_grace_s'.*must be above heartbeat_s 5"):
        parse(heartbeat_s=5, heartbeat_grace_s=5)


def test_epochs_cannot_be_searched():
    """A searched `epochs` silently overrode tune's: the log said 1 epoch while the trials ran 3."""
    with pytest.raises(ContractError, match="search_space key 'epochs': each trial trains tune's own `epochs`"):
        parse(search_space={"epochs": {"type": "int", "low": 1, "high": 3}})
