import json

import pytest

from contracts import ContractError, all_contracts, get_contract
from contracts.layout import Layout

STEPS = ["download-kaggle", "preprocess", "push-hf", "train-seg", "train-ellipse", "export-onnx", "validate"]


def test_every_pipeline_step_has_a_contract():
    assert set(STEPS) <= set(all_contracts())


@pytest.mark.parametrize("name", STEPS)
def test_describe_is_json_with_schema(name):
    described = get_contract(name).describe()
    text = json.dumps(described)
    assert json.loads(text)["name"] == name
    props = described["hyperparameters"]["properties"]
    assert props and all("description" in p for p in props.values()), "every setting has a one-line doc"
    assert described["hyperparameters"]["additionalProperties"] is False


def test_sagemaker_string_values_are_decoded():
    hp = get_contract("train-seg").parse_hyperparameters(
        {"epochs": "32", "augment": "false", "lr": "0.01", "model": "tiny_efficientvit_micro",
         "clip_grad_norm": "null", "sagemaker_program": "x", "step": "train-seg"})
    assert hp.epochs == 32 and hp.augment is False and hp.lr == 0.01
    assert hp.model == "tiny_efficientvit_micro" and hp.clip_grad_norm is None


def test_string_field_keeps_a_numeric_looking_string():
    hp = get_contract("push-hf").parse_hyperparameters({"commit_message": "2024", "revision": "123"})
    assert hp.commit_message == "2024" and hp.revision == "123"


def test_list_value_from_string():
    hp = get_contract("download-kaggle").parse_hyperparameters({"splits": '["train","validation"]'})
    assert hp.splits == ["train", "validation"]


@pytest.mark.parametrize("raw,field", [
    ({"epochs": "two"}, "epochs"),
    ({"bogus_key": 1}, "bogus_key"),
    ({"lr": "NaN"}, "lr"),
    ({"lr": -1}, "lr"),
    ({"lr": "Infinity"}, "lr"),
    ({"optimizer": "lion"}, "optimizer"),
])
def test_bad_values_name_the_field_on_the_first_line(raw, field):
    with pytest.raises(ContractError) as caught:
        get_contract("train-seg").parse_hyperparameters(raw)
    assert str(caught.value).splitlines()[0].startswith(f"hyperparameter '{field}'")


def test_layout_honours_sagemaker_environment(tmp_path):
    env = {"SAGEMAKER_BASE_DIR": str(tmp_path), "SM_CHANNEL_TRAIN": "/data/t",
           "SM_MODEL_DIR": "/m", "SM_OUTPUT_DATA_DIR": "/o"}
    layout = Layout.resolve(None, env=env)
    assert layout.root == tmp_path
    assert str(layout.channel("train")) == "/data/t"
    assert str(layout.channel("validation")) == f"{tmp_path}/input/data/validation"
    assert str(layout.output("model", "model", env=env)) == "/m"
    assert str(layout.output("metrics", "output/data/metrics", env=env)) == "/o/metrics"
    assert layout.hyperparameters_file == tmp_path / "input/config/hyperparameters.json"


def test_explicit_overrides_win(tmp_path):
    layout = Layout.resolve(tmp_path, {"train": "/a"}, {"model": "/b"}, env={"SM_CHANNEL_TRAIN": "/x"})
    assert str(layout.channel("train")) == "/a"
    assert str(layout.output("model", "model", env={})) == "/b"
    assert layout.output("metrics", "output/data/metrics", env={}) == tmp_path / "output/data/metrics"


@pytest.mark.parametrize("selected", ["train-ellipse", '"train-ellipse"'])
def test_a_step_selector_naming_another_step_is_refused(selected):
    """hyperparameters.json written for train-ellipse, given to `docker run IMAGE train-seg`, used to
    train train-seg without a word (and OPENEDS_STEP silently won over a disagreeing `step`)."""
    with pytest.raises(ContractError, match="hyperparameter 'step': 'train-ellipse' selects another step than the one"):
        get_contract("train-seg").parse_hyperparameters({"step": selected, "epochs": "2"})
    assert get_contract("train-seg").parse_hyperparameters({"step": '"train-seg"', "epochs": "2"}).epochs == 2
