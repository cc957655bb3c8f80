"""predict's hyperparameters: the region of interest in the forms a user types."""

import pytest
from pydantic import ValidationError

from contracts.predict import PredictHyperparameters


@pytest.mark.parametrize("given", ["10,20,320,200", " 10, 20, 320, 200", [10, 20, 320, 200]])
def test_a_region_is_taken_as_comma_separated_integers_or_a_list(given):
    assert PredictHyperparameters(roi=given).roi == (10, 20, 320, 200)


@pytest.mark.parametrize("given, field", [("10,20,320", "roi.3"), ("10,20,16,200", "roi.2"), ("-1,0,64,64", "roi"),
                                          ("10,20,x,200", "roi"), ([0, 0, 64, 5000], "roi.3"), ("1,2,3,4,5", "roi")])
def test_a_region_out_of_bounds_or_malformed_is_refused_naming_the_field(given, field):
    with pytest.raises(ValidationError) as raised:
        PredictHyperparameters(roi=given)
    assert raised.value.errors()[0]["loc"][:len(field.split("."))] == tuple(
        int(part) if part.isdigit() else part for part in field.split("."))
