"""The command line generated from the contracts (steps/__main__.py)."""

from contracts import get_contract
from steps.__main__ import build_parser


def test_help_says_the_values_each_setting_accepts():
    text = " ".join(build_parser(get_contract("download-kaggle")).format_help().split())
    assert "(one of kaggle, portrait2019; default: \"kaggle\")" in text
    assert "(at least 0.4, at most 1.0; default: 1.0)" in text  # synthetic_min_eye_scale
    assert "(one of train, validation, test; default: [\"train\", \"validation\", \"test\"])" in text
    text = " ".join(build_parser(get_contract("predict")).format_help().split())
    assert "(one of 0, 90, 180, 270; default: 0)" in text
