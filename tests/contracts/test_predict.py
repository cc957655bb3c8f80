"""predict's hyperparameters: the region of interest in the forms a user types."""

import pytest
from pydantic import ValidationError

from contracts.predict import PredictHyperparameters


@pytest.mark.parametrize("given", ["10,20,320,200", " 10, 20, 320, 200", [10, 20, 320, 200]])
def test_a_region_is_taken_as_comma_separated_integers_or_a_list(given):
    assert PredictHyperparameters(roi=given).roi == (10, 20, 320, 200)


@pytest.mark.parametrize("given, field, says", [
    ("10,20,320", "roi", "expected four values x,y,width,height (e.g. 10,20,320,200), not 3"),
    ("1,2,3,4,5", "roi", "not 5"),
    ("10,20,16,200", "roi.2", "greater than or equal to 32"),
    ("10,20,-5,200", "roi.2", "greater than or equal to 32"),
    ("-1,0,64,64", "roi.0", "greater than or equal to 0"),
    ("10,20,x,200", "roi", "expected four whole numbers x,y,width,height"),
    ("1,,2,3", "roi", "expected four whole numbers x,y,width,height"),
    ([0, 0, 64, 5000], "roi.3", "less than or equal to 4096")])
def test_a_region_out_of_bounds_or_malformed_is_refused_naming_the_field(given, field, says):
    with pytest.raises(ValidationError) as raised:
        PredictHyperparameters(roi=given)
    error = raised.value.errors()[0]
    assert error["loc"] == tuple(int(part) if part.isdigit() else part for part in field.split("."))
    assert says in error["msg"] and "invalid literal" not in error["msg"]

