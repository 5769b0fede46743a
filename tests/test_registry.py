"""The shared registry, option checks (check_options, Registry.build) and the model factory's option handling."""
import pytest
import torch

from cnnlab import create_model
from cnnlab.errors import CnnlabError
from cnnlab.registry import Registry, accepted_options, check_options


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


# ---------------------------------------------------------------- check_options and Registry.build


def _builder(num_classes, in_channels, width=1, color="red"):
    """a test builder"""
    return {"num_classes": num_classes, "in_channels": in_channels, "width": width, "color": color}


def _open_builder(num_classes, **options):
    return {"num_classes": num_classes, **options}


def test_check_options_names_the_bad_option_with_a_hint_and_lists_the_accepted():
    with pytest.raises(CnnlabError) as e:
        check_options(_builder, ["width", "colour"], "model 'toy'", skip=("num_classes", "in_channels"))
    message = str(e.value)
    assert message.startswith("model 'toy' has no option 'colour' (did you mean color?)")
    assert message.endswith("(its options: width, color)")  # caller-filled parameters are not offered


def test_check_options_without_a_close_match_still_lists_the_options():
    with pytest.raises(CnnlabError, match=r"has no option 'zzz' \(its options: num_classes, in_channels, width"):
        check_options(_builder, ["zzz"], "thing")


def test_check_options_accepts_known_and_extra_names():
    check_options(_builder, ["width", "color"], "model 'toy'")
    check_options(_builder, ["interval"], "schedule 'toy'", extra=("interval",))
    with pytest.raises(CnnlabError, match="its options: none"):
        check_options(lambda: None, ["a"], "thing")


def test_builders_taking_kwargs_accept_anything():
    assert accepted_options(_open_builder) is None
    check_options(_open_builder, ["anything", "at_all"], "model 'open'")
    reg = Registry("model")
    reg.add("open", _open_builder)
    assert reg.build("open", 10, anything=1) == {"num_classes": 10, "anything": 1}


def test_build_passes_positional_args_and_options_through():
    reg = Registry("model")
    reg.add("toy", _builder)
    assert reg.build("Toy", 10, 3, width=2) == {"num_classes": 10, "in_channels": 3, "width": 2, "color": "red"}
    # positional arguments are the caller's, not options the user could misspell
    with pytest.raises(CnnlabError, match=r"model 'toy' has no option 'colour' .*\(its options: width, color\)"):
        reg.build("toy", 10, 3, colour="blue")


def test_build_turns_builder_type_and_value_errors_into_cnnlab_errors():
    def picky(n, width=1):
        if width < 0:
            raise ValueError("width must be >= 0")
        return [None] * width + n  # TypeError for a str n

    reg = Registry("model")
    reg.add("picky", picky)
    with pytest.raises(CnnlabError, match=r"model 'picky': bad options \{'width': -1\}: width must be >= 0") as e:
        reg.build("picky", [], width=-1)
    assert isinstance(e.value.__cause__, ValueError)
    with pytest.raises(CnnlabError, match="model 'picky': bad options") as e:
        reg.build("picky", "x", width=1)
    assert isinstance(e.value.__cause__, TypeError)


def test_build_lets_cnnlab_errors_through_unchanged():
    def strict(n):
        raise CnnlabError("strict: needs an input side >= 16")

    reg = Registry("model")
    reg.add("strict", strict)
    with pytest.raises(CnnlabError, match="^strict: needs an input side >= 16$"):
        reg.build("strict", 1)


def test_registry_basics():
    reg = Registry("widget")
    reg.add("Beta", _builder)
    reg.add("alpha", _open_builder, "an open one", paper="x")
    assert reg.names() == ["alpha", "beta"] and len(reg) == 2 and "BETA" in reg
    assert reg.entry("beta").description == "a test builder"  # first docstring line
    assert reg.entry("alpha").meta == {"paper": "x"}
    assert [e.name for e in reg] == ["alpha", "beta"]
    with pytest.raises(RuntimeError, match="registered twice"):
        reg.add("beta", _builder)
    with pytest.raises(CnnlabError, match=r"unknown widget 'gamma' \(available: alpha, beta\)"):
        reg.get("gamma")
