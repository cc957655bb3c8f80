"""The Optuna study pieces: sampling from the configured space, pruning, shared storage, outputs."""

from __future__ import annotations

import csv
import json

import optuna
import pytest

from contracts import get_contract
from contracts.train_seg import TrainSegHyperparameters
from steps.__main__ import build_parser
from steps.train import search, study_storage

# ask/tell here drive the study by hand; Optuna notes that heartbeats are meant for optimize().
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")

TUNE = get_contract("tune")
TRAIN_SEG = get_contract("train-seg")


def tune_hp(**raw):
    return TUNE.parse_hyperparameters(raw)


SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
         "batch_size": {"type": "int", "low": 2, "high": 8, "step": 2},
         "momentum": {"type": "float", "low": 0.5, "high": 0.9, "step": 0.1},
         "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
         "augment": {"type": "categorical", "choices": [True, False]},
         "clip_grad_norm": {"type": "categorical", "choices": [None, 1.0]}}


def test_suggestions_come_from_the_configured_distributions(tmp_path):
    hp = tune_hp(search_space=SPACE, sampler="random", sampler_seed=0, epochs=3, lr=5e-3, dice_weight=0.5)
    study = search.open_study(hp, study_storage.default_storage(tmp_path))
    for _ in range(20):
        trial = study.ask()
        params = search.suggest(trial, hp.search_space)
        assert 1e-4 <= params["lr"] <= 1e-2 and params["batch_size"] in (2, 4, 6, 8)
        assert round(params["momentum"], 6) in (0.5, 0.6, 0.7, 0.8, 0.9) and params["optimizer"] in ("adam", "sgd")
        settings = search.trial_settings(hp, params)
        assert isinstance(settings, TrainSegHyperparameters)
        assert settings.lr == params["lr"] and settings.batch_size == params["batch_size"]
        assert settings.epochs == 3 and settings.dice_weight == 0.5  # the fixed part of every trial
        study.tell(trial, 0.0)
    distributions = study.trials[0].distributions
    assert distributions["lr"].log and distributions["batch_size"].step == 2


def test_median_pruner_stops_a_trial_that_trails_at_the_same_epoch(tmp_path):
    hp = tune_hp(pruner="median", pruner_startup_trials=1, pruner_warmup_epochs=0)
    study = search.open_study(hp, study_storage.default_storage(tmp_path))
    leader = study.ask()
    for epoch, value in enumerate([0.4, 0.6]):
        search.PruningReporter(leader)(epoch, {"valid_iou": value})
    study.tell(leader, 0.6)

    close = study.ask()
    search.PruningReporter(close)(0, {"valid_iou": 0.45})  # ahead of the leader at epoch 0: goes on
    laggard = study.ask()
    reporter = search.PruningReporter(laggard)
    with pytest.raises(optuna.TrialPruned):
        reporter(0, {"valid_iou": 0.1})
    assert reporter.values == [0.1]
    with pytest.raises(FloatingPointError, match="valid_iou is nan"):
        search.PruningReporter(study.ask())(0, {"valid_iou": float("nan")})


def test_pruner_choices():
    assert isinstance(search.make_pruner(tune_hp(pruner="median")), optuna.pruners.MedianPruner)
    assert isinstance(search.make_pruner(tune_hp(pruner="hyperband")), optuna.pruners.HyperbandPruner)
    assert isinstance(search.make_pruner(tune_hp(pruner="none")), optuna.pruners.NopPruner)
    assert isinstance(search.make_sampler(tune_hp(sampler="random")), optuna.samplers.RandomSampler)


def test_workers_sharing_a_storage_join_one_study_and_enqueue_once(tmp_path):
    storage = study_storage.default_storage(tmp_path)
    assert storage.startswith("sqlite:////") and storage.endswith("/optuna.db")
    hp = tune_hp(search_space={"lr": {"type": "categorical", "choices": [1e-3, 3e-3]}},
                 enqueue_trials=[{"lr": 3e-3}], study_name="shared")
    first = search.open_study(hp, storage)
    trial = first.ask()
    assert search.suggest(trial, hp.search_space) == {"lr": 3e-3}  # the enqueued baseline goes first
    first.tell(trial, 0.5)
    second = search.open_study(hp, storage)  # another worker, same URL and name
    assert second._study_id == first._study_id and len(second.trials) == 1
    assert not any(t.state == optuna.trial.TrialState.WAITING for t in second.trials)  # not enqueued again


def test_study_outputs_feed_train_seg_directly(tmp_path):
    hp = tune_hp(search_space=SPACE, sampler="random", sampler_seed=1, epochs=2)
    study = search.open_study(hp, study_storage.default_storage(tmp_path))
    worker = []
    for value in (0.3, 0.7, None, 0.5):
        trial = study.ask()
        search.suggest(trial, hp.search_space)
        state = optuna.trial.TrialState.PRUNED if value is None else optuna.trial.TrialState.COMPLETE
        study.tell(trial, value, state=state)
        worker.append(study.trials[-1])
    out = tmp_path / "study"
    summary = search.write_study_outputs(out, study, hp, worker, "sqlite:///x.db")

    best = json.loads((out / search.BEST_PARAMS).read_text())
    assert best == study.best_params and summary["best_value"] == 0.7 and summary["best_trial"] == 1
    assert summary["counts"] == {"complete": 3, "pruned": 1, "fail": 0, "running": 0}
    # best_params.json is a valid hyperparameters.json for train-seg, and so is the full settings file
    assert TRAIN_SEG.parse_hyperparameters(best).lr == best["lr"]
    full = TRAIN_SEG.parse_hyperparameters(json.loads((out / search.BEST_HYPERPARAMETERS).read_text()))
    assert full.epochs == 2 and full.optimizer == best["optimizer"]
    # best_params.args are train-seg flags: `python -m steps train-seg --root R $(cat best_params.args)`
    args = vars(build_parser(TRAIN_SEG).parse_args((out / search.BEST_ARGS).read_text().split()))
    flags = TRAIN_SEG.parse_hyperparameters({k: v for k, v in args.items() if k in best})
    assert {name: getattr(flags, name) for name in best} == best
    with (out / search.TRIALS_CSV).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert [r["pruned"] for r in rows] == ["False", "False", "True", "False"]
    assert json.loads(rows[1]["params"]) == best


def test_best_ignores_trials_of_another_search_space_in_the_same_study(tmp_path):
    storage = study_storage.default_storage(tmp_path)
    earlier = tune_hp(search_space={"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                                    "batch_size": {"type": "categorical", "choices": [4, 8]}})
    study = search.open_study(earlier, storage)
    study.enqueue_trial({"lr": 0.05, "batch_size": 8})
    trial = study.ask()
    search.suggest(trial, earlier.search_space)
    study.tell(trial, 0.99)  # the study's best, but of a space that is no longer searched
    now = tune_hp(search_space={"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
                  sampler="random", sampler_seed=0)
    study = search.open_study(now, storage)
    trial = study.ask()
    params = search.suggest(trial, now.search_space)
    study.tell(trial, 0.6)
    summary = search.write_study_outputs(tmp_path / "study", study, now, [study.trials[-1]], storage)
    assert summary["best_params"] == params and summary["best_value"] == 0.6 and summary["best_trial"] == 1
    assert summary["other_space_trials"] == 1
    assert json.loads((tmp_path / "study" / search.BEST_PARAMS).read_text()) == params


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_rerun_with_the_same_seed_does_not_repeat_the_parameters(tmp_path, sampler):
    """After a SIGTERM, a resumed tune (same sampler_seed) drew exactly the first trials' parameters."""
    hp = tune_hp(search_space=SPACE, sampler=sampler, sampler_seed=7, epochs=1)

    def two_trials(folder, trials_dir) -> list[dict]:
        folder.mkdir(exist_ok=True)
        study = search.open_study(hp, study_storage.default_storage(folder), trials_dir)
        drawn = []
        for _ in range(2):
            trial = study.ask()
            trial.set_user_attr("checkpoint_dir", str(trials_dir / f"trial_{trial.number:04d}"))  # as the objective
            drawn.append(search.suggest(trial, hp.search_space))
            study.tell(trial, 0.5)
        return drawn

    ours = tmp_path / "root" / "checkpoints" / "trials"
    first, rerun = two_trials(tmp_path / "study", ours), two_trials(tmp_path / "study", ours)
    assert not [params for params in rerun if params in first]
    assert two_trials(tmp_path / "another", ours) == first  # a new study with the seed still reproduces
    # another worker joining the study (its own folder) keeps its seed as given
    assert two_trials(tmp_path / "study", tmp_path / "worker-b" / "trials") == first
