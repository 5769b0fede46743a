"""The shared registry and the model factory's option handling."""
import pytest
import torch

from cnnlab import create_model
from cnnlab.errors import CnnlabError
from cnnlab.registry import Registry


def test_unknown_name_suggests_close_matches():
    reg = Registry("widget")
    reg.add("resnet20", object(), "a")
    with pytest.raises(CnnlabError, match="did you mean resnet20"):
        reg.get("resnet2")


def test_init_applies_to_builders_without_an_init_option():
    torch.manual_seed(0)
    a = create_model("lenet5", 10, 1, image_size=28, init="xavier-uniform")
    torch.manual_seed(0)
    b = create_model("lenet5", 10, 1, image_size=28)
    assert not torch.equal(a[0].weight, b[0].weight)
    assert torch.count_nonzero(a[0].bias) == 0  # Xavier init zeroes biases


def test_unknown_option_and_wrong_size_are_clear():
    with pytest.raises(CnnlabError, match="no option 'colour'"):
        create_model("mlp", 10, 1, image_size=28, colour=1)
    with pytest.raises(CnnlabError, match="input side >= 16"):
        create_model("lenet5", 10, 1, image_size=8)
