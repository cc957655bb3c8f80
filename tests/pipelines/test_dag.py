"""The DAG as data: SPEC section 1's wiring, checked against the step contracts."""

from __future__ import annotations

import pytest

from contracts import all_contracts
from pipelines.dag import (
    ALL_TASKS,
    TASKS,
    Dag,
    DagError,
    Edge,
    build_dag,
    load_profile,
    parse_assignments,
    resolve_hyperparameters,
)

SPEC_EDGES = {
    ("download-kaggle", "raw", "preprocess", "raw"),
    ("preprocess", "train", "push-hf", "train"),
    ("preprocess", "validation", "push-hf", "validation"),
    ("preprocess", "test", "push-hf", "test"),
    ("preprocess", "train", "train-seg", "train"),
    ("preprocess", "validation", "train-seg", "validation"),
    ("preprocess", "train", "train-ellipse", "train"),
    ("preprocess", "validation", "train-ellipse", "validation"),
    ("train-seg", "model", "export-onnx", "seg_model"),
    ("train-ellipse", "model", "export-onnx", "ellipse_model"),
    ("export-onnx", "onnx", "validate", "onnx"),
    ("train-seg", "model", "validate", "seg_model"),
    ("train-ellipse", "model", "validate", "ellipse_model"),
    ("preprocess", "validation", "validate", "test"),
    ("train-seg", "metrics", "validate", "seg_metrics"),
}


def as_tuples(dag: Dag) -> set[tuple[str, str, str, str]]:
    return {(e.source_task, e.source_output, e.target_task, e.channel) for e in dag.edges}


def test_the_dag_is_the_spec_pipeline_and_every_task_is_a_step():
    dag = build_dag()
    assert as_tuples(dag) == SPEC_EDGES
    assert dag.tasks == TASKS
    assert set(dag.tasks) <= set(all_contracts())


def test_order_dependencies_and_downstream():
    dag = build_dag()
    order = dag.order()
    for edge in dag.edges:
        assert order.index(edge.source_task) < order.index(edge.target_task), str(edge)
    assert dag.upstream("export-onnx") == ["train-seg", "train-ellipse"]
    assert dag.downstream("train-seg") == {"export-onnx", "validate"}
    assert dag.downstream("preprocess") == {"push-hf", "train-seg", "train-ellipse", "export-onnx", "validate"}
    assert dag.downstream("validate") == set()


def test_every_required_channel_is_fed_exactly_once():
    dag = build_dag()
    for task in dag.tasks:
        fed = dag.inputs_of(task)
        required = {c.name for c in dag.contract(task).channels if c.required}
        assert required <= set(fed), task


def test_evaluate_split_test_moves_only_the_validate_edge():
    edges = as_tuples(build_dag("test"))
    assert ("preprocess", "test", "validate", "test") in edges
    assert edges - {("preprocess", "test", "validate", "test")} == \
        SPEC_EDGES - {("preprocess", "validation", "validate", "test")}
    with pytest.raises(DagError, match="evaluate_split"):
        build_dag("train")  # type: ignore[arg-type]


def test_tune_branch_adds_one_task_between_preprocess_and_train_seg():
    dag = build_dag(tune=True)
    assert dag.tasks == ALL_TASKS and set(ALL_TASKS) - set(TASKS) == {"tune"}
    assert as_tuples(dag) - SPEC_EDGES == {("preprocess", "train", "tune", "train"),
                                          ("preprocess", "validation", "tune", "validation"),
                                          ("tune", "study", "train-seg", "tuned")}
    assert as_tuples(dag) > SPEC_EDGES
    assert dag.upstream("train-seg") == ["preprocess", "tune"]
    assert dag.downstream("tune") == {"train-seg", "export-onnx", "validate"}
    order = dag.order()
    assert order.index("tune") < order.index("train-seg")
    # without the branch, train-seg's optional channel stays unfed
    assert "tuned" not in build_dag().inputs_of("train-seg")


def test_tune_settings_need_the_tune_branch():
    with pytest.raises(DagError, match=r"not in this pipeline: tune \(add --tune"):
        resolve_hyperparameters(load_profile("local"), {"tune": {"n_trials": 2}})
    resolved = resolve_hyperparameters(load_profile("local"), {"tune": {"n_trials": 2}}, tasks=ALL_TASKS)
    assert resolved["tune"]["n_trials"] == 2 and "tune" not in resolve_hyperparameters(load_profile("local"))


def test_a_searched_train_seg_setting_cannot_be_set_beside_the_tune_branch():
    # the local profile's tune searches lr and weight_decay; tuned values would replace these
    with pytest.raises(DagError, match=r"--set train-seg\.lr: tune searches lr and its best value replaces"):
        resolve_hyperparameters(load_profile("local"), {"train-seg": {"lr": 0.01}}, tasks=ALL_TASKS)
    narrowed = {"tune": {"search_space": {"weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2}}},
                "train-seg": {"lr": 0.01, "epochs": 3}}
    assert resolve_hyperparameters(load_profile("local"), narrowed, tasks=ALL_TASKS)["train-seg"]["lr"] == 0.01
    assert resolve_hyperparameters(load_profile("local"), {"train-seg": {"lr": 0.01}})["train-seg"]["lr"] == 0.01


@pytest.mark.parametrize("bad_edge, message", [
    (Edge("train-seg", "weights", "export-onnx", "seg_model"), "train-seg has no output 'weights'"),
    (Edge("train-seg", "model", "export-onnx", "model"), "export-onnx has no channel 'model'"),
    (Edge("train-sag", "model", "export-onnx", "seg_model"), "unknown task 'train-sag'"),
    (Edge("preprocess", "test", "train-seg", "train"), "train-seg.train: fed by 2 edges"),
])
def test_validate_names_a_wrong_edge(bad_edge, message):
    dag = build_dag()
    with pytest.raises(DagError, match=message.replace(".", r"\.")):
        Dag(dag.tasks, dag.edges + (bad_edge,)).validate()


def test_validate_names_an_unfed_required_channel():
    dag = build_dag()
    edges = tuple(e for e in dag.edges if not (e.target_task == "validate" and e.channel == "onnx"))
    with pytest.raises(DagError, match=r"validate\.onnx: required channel is not fed"):
        Dag(dag.tasks, edges).validate()


def test_a_cycle_is_refused():
    dag = build_dag()
    with pytest.raises(DagError, match="cycle"):
        Dag(dag.tasks, dag.edges + (Edge("validate", "report", "download-kaggle", "source"),)).order()


@pytest.mark.parametrize("profile", ["local", "smoke", "kfp"])
def test_profiles_validate_against_the_contracts(profile):
    resolved = resolve_hyperparameters(load_profile(profile), tasks=ALL_TASKS)
    assert set(resolved) == set(ALL_TASKS)
    assert resolved["push-hf"]["push"] is False


def test_local_profile_is_the_embedded_default():
    local = load_profile("local")
    assert local["download-kaggle"]["source"] == "synthetic"
    assert local["train-seg"]["device"] == "cpu"


def test_assignments_are_decoded_like_sagemaker_strings():
    parsed = parse_assignments(["train-seg.epochs=3", "train-seg.augment=false", "train-seg.max-train-rows=16",
                                "download-kaggle.splits=[\"train\",\"validation\"]"])
    assert parsed == {"train-seg": {"epochs": 3, "augment": False, "max_train_rows": 16},
                      "download-kaggle": {"splits": ["train", "validation"]}}
    resolved = resolve_hyperparameters(load_profile("local"), parsed)
    assert resolved["train-seg"]["epochs"] == 3 and resolved["train-seg"]["device"] == "cpu"


@pytest.mark.parametrize("assignment, message", [
    ("train-seg.epochs", "expected TASK.FIELD=VALUE"),
    ("epochs=3", "expected TASK.FIELD=VALUE"),
    ("train-sag.epochs=3", "unknown task 'train-sag'"),
])
def test_malformed_assignments_are_refused(assignment, message):
    with pytest.raises(DagError, match=message):
        parse_assignments([assignment])


@pytest.mark.parametrize("assignment, message", [
    ("train-seg.epochs=0", "task train-seg: hyperparameter 'epochs'"),
    ("train-seg.epochz=3", "task train-seg: hyperparameter 'epochz': unknown key"),
    ("validate.min_miou=two", "task validate: hyperparameter 'min_miou'"),
])
def test_invalid_settings_fail_before_anything_runs(assignment, message):
    with pytest.raises(DagError, match=message):
        resolve_hyperparameters(load_profile("local"), parse_assignments([assignment]))
