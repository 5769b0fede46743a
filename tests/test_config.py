"""TrainConfig: each field's declaration, the sets derived from it, its rules, KEY=VALUE parsing and YAML."""
import dataclasses

import pytest
import yaml

from cnnlab.config import (ENGINE_KEYS, FIELDS, RESUME_OVERRIDABLE, SECTIONS, TrainConfig, check_value,
                           field_default, parse_key_value)
from cnnlab.data.augment import AugmentConfig
from cnnlab.errors import CnnlabError

# ------------------------------------------------------------------ declarations


@pytest.mark.parametrize("name", list(FIELDS))
def test_every_field_declares_help_and_section(name):
    meta = FIELDS[name].metadata
    assert isinstance(meta["help"], str) and meta["help"].strip(), f"{name} has no help text"
    assert meta["section"] in SECTIONS
    assert isinstance(meta["result"], bool) and isinstance(meta["resume"], bool)
    if meta["choices"]:
        assert meta["rule"] is not None, f"{name}: choices must be checked by a rule"


def test_short_flags_are_unique_and_every_section_is_used():
    shorts = [f.metadata["short"] for f in FIELDS.values() if f.metadata["short"]]
    assert all(s.startswith("-") and not s.startswith("--") for s in shorts)
    assert len(shorts) == len(set(shorts))
    assert {f.metadata["section"] for f in FIELDS.values()} == set(SECTIONS)


def test_defaults_pass_their_own_rules():
    cfg = TrainConfig.from_dict({})
    assert cfg == TrainConfig()
    assert field_default("model_options") == {} and field_default("model_options") is not field_default("model_options")


def test_resume_overridable_is_derived_from_the_declarations():
    assert {"epochs", "threads", "eval_every", "device"} <= RESUME_OVERRIDABLE
    assert not {"lr", "out", "name"} & RESUME_OVERRIDABLE
    assert RESUME_OVERRIDABLE == {k for k, f in FIELDS.items() if f.metadata["resume"]}


def test_engine_keys_are_the_fields_that_do_not_change_the_result():
    assert {"threads", "device", "out", "name", "data_dir"} <= ENGINE_KEYS
    assert not {"lr", "seed"} & ENGINE_KEYS
    assert ENGINE_KEYS == {k for k, f in FIELDS.items() if not f.metadata["result"]}
    # a field that changes the result may still be resumable only when declared so explicitly (epochs)
    assert "epochs" in RESUME_OVERRIDABLE - ENGINE_KEYS


# ------------------------------------------------------------------ rules

# A bad and a good value for every field with a rule (a new rule needs its lines here).
BAD = [("image_size", 3), ("channels", 2), ("val_split", 1), ("val_split", -0.1), ("dropout", 1.0),
       ("train_subset", 0), ("test_subset", 0), ("epochs", 0), ("batch_size", 0), ("lr", 0), ("weight_decay", -1e-4),
       ("warmup_epochs", -1), ("label_smoothing", 1.0), ("clip_grad", -1), ("ema", 1.0), ("crop_padding", -1),
       ("translate", 1.0), ("rotate", 200), ("rotate", -1), ("scale", 1.5), ("noise", 1.5), ("salt_pepper", -0.1),
       ("cutout", -1), ("tta", "mirror"), ("precision", "fp8"), ("device", "tpu"), ("threads", 0),
       ("target_acc", 0), ("target_acc", 101), ("eval_every", 0), ("eval_batch_size", 0), ("name", "a/b"),
       ("name", ".."), ("name", ""), ("save_every", 0), ("seed", -1), ("seed", 2**32),
       ("pretrain_epochs", -1), ("pretrain_lr", 0), ("cd_k", 0), ("cv_fold", "4/3"),
       ("cv_fold", "1/1"), ("cv_fold", "a/3"), ("head", "softmax")]
GOOD = [("image_size", 4), ("channels", 3), ("val_split", 0.5), ("dropout", 0), ("train_subset", 1),
        ("test_subset", 1), ("epochs", 0.5), ("batch_size", 1), ("lr", 1e-4), ("weight_decay", 0),
        ("warmup_epochs", 0), ("label_smoothing", 0.1), ("clip_grad", 1.0), ("ema", 0.999), ("crop_padding", 4),
        ("translate", 0.1), ("rotate", 180), ("scale", 0.2), ("noise", 0.05), ("salt_pepper", 0.3), ("cutout", 8),
        ("tta", "flip-shift"), ("precision", "bf16"), ("device", "cpu"), ("threads", 1), ("target_acc", 99.5),
        ("target_acc", 0.995), ("eval_every", 2), ("eval_batch_size", 1), ("name", "my-run.2"), ("save_every", 5),
        ("seed", 2**32 - 1), ("pretrain_epochs", 0), ("pretrain_lr", 0.1), ("cd_k", 5), ("head", "energy"),
        ("cv_fold", "3/3")]
# validation, run length and fine-tuning
BAD += [("test_split", 0), ("test_split", 1), ("monitor", "test_acc"), ("patience", 0), ("min_delta", -0.1),
        ("steps", 0), ("min_steps", -1), ("accum_steps", 0), ("mixup", -0.1), ("cutmix", -1),
        ("color_jitter", 1.0), ("resized_crop", 1.0), ("erase", 1.5), ("policy", "autoaugment")]
GOOD += [("test_split", 0.3), ("val_split", 0), ("monitor", "val_loss"), ("patience", 3), ("min_delta", 0.001),
         ("steps", 100), ("min_steps", 0), ("accum_steps", 4), ("mixup", 0.2), ("cutmix", 1.0),
         ("color_jitter", 0.4), ("resized_crop", 0.35), ("erase", 0.25), ("policy", "randaugment:2,9")]
# the streaming data path
BAD += [("shear", 90), ("shear", -1), ("tta", "random:0"), ("tta", "random:x"), ("tta", "random")]
GOOD += [("shear", 0), ("shear", 15.5), ("tta", "random:100"), ("tta", "random:1")]
BAD += [("data_path", "disk"), ("crop_scale", 0), ("crop_scale", 1.5), ("data_workers", -1)]
GOOD += [("data_path", "stream"), ("crop_scale", 1.0), ("data_workers", 0)]
# DDP
BAD += [("dist_timeout", 0)]
GOOD += [("dist_timeout", 30.5)]


def test_every_rule_has_a_bad_and_a_good_case():
    ruled = {k for k, f in FIELDS.items() if f.metadata["rule"] is not None}
    assert {k for k, _ in BAD} == ruled
    assert {k for k, _ in GOOD} == ruled


@pytest.mark.parametrize("name, value", BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_rule_rejects_a_bad_value_naming_the_field(name, value):
    with pytest.raises(CnnlabError, match=rf"^config: {name} must be "):
        TrainConfig.from_dict({name: value})


@pytest.mark.parametrize("name, value", GOOD, ids=[f"{k}={v!r}" for k, v in GOOD])
def test_rule_accepts_a_good_value(name, value):
    assert getattr(TrainConfig.from_dict({name: value}), name) == value


@pytest.mark.parametrize("name, value, expected", [
    ("batch_size", 1.5, "config: batch_size: expected int, got 1.5"),
    ("batch_size", True, "config: batch_size: expected int"),
    ("lr", "fast", "config: lr: expected float"),
    ("flip", "maybe", "config: flip: expected bool"),
    ("model_options", [1], "config: model_options: expected dict"),
    ("data", None, "config: data: must not be empty"),
])
def test_wrong_types_name_the_field(name, value, expected):
    with pytest.raises(CnnlabError, match=expected.replace("[", r"\[")):
        TrainConfig.from_dict({name: value})


def test_values_are_converted_to_the_field_type():
    cfg = TrainConfig.from_dict({"batch_size": 32.0, "lr": 1, "flip": "yes", "compile": "false", "data": 5})
    assert (cfg.batch_size, cfg.lr, cfg.flip, cfg.compile, cfg.data) == (32, 1.0, True, False, "5")
    assert type(cfg.batch_size) is int and type(cfg.lr) is float
    assert check_value("batch_size", "64") == 64


def test_errors_name_their_source(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_size: 0\n")
    with pytest.raises(CnnlabError, match=rf"^{path}: batch_size must be >= 1"):
        TrainConfig.from_yaml(path)
    with pytest.raises(CnnlabError, match="^flags: lr must be > 0"):
        TrainConfig.from_dict({"lr": -1}, source="flags")


# ---------------------------------------------------- augmentation: one set of rules

AUGMENT_FIELDS = [f.name for f in dataclasses.fields(AugmentConfig)]
# per AugmentConfig field: values both configs must refuse, values both must accept
AUGMENT_CASES = {
    "crop_padding": ([-1, 1.5, "four"], [0, 4, 4.0]),
    "flip": (["maybe", 2], [True, False, "yes"]),
    "translate": ([-0.1, 1.0, 2], [0, 0.25, 0.99]),
    "rotate": ([-1, 180.5, 360], [0, 15, 180]),
    "scale": ([-0.1, 1.0], [0, 0.2]),
    "noise": ([-0.01, 1.0, 1.5], [0, 0.1]),
    "salt_pepper": ([-0.1, 1.0], [0, 0.3]),
    "cutout": ([-1, 2.5], [0, 8]),
    "color_jitter": ([-0.1, 1.0], [0, 0.4]),
    "resized_crop": ([-0.1, 1.0], [0, 0.35]),
    "erase": ([-0.1, 1.5], [0, 0.25, 1.0]),
    "policy": (["autoaugment", "randaugment:0,9", "randaugment:2,31", "trivialaugment:3"],
               ["none", "trivialaugment", "randaugment", "randaugment:2,9"]),
    "shear": ([-1, 90, 100], [0, 10, 45.5]),
    "vflip": (["maybe", 2], [True, False]),
}
AUGMENT_BAD = [(k, v) for k in AUGMENT_FIELDS for v in AUGMENT_CASES.get(k, ([], []))[0]]
AUGMENT_GOOD = [(k, v) for k in AUGMENT_FIELDS for v in AUGMENT_CASES.get(k, ([], []))[1]]


def test_augment_cases_cover_every_augment_field():
    assert set(AUGMENT_CASES) == set(AUGMENT_FIELDS)
    assert set(AUGMENT_FIELDS) <= {k for k, f in FIELDS.items() if f.metadata["section"] == "augmentation"}


@pytest.mark.parametrize("name, value", AUGMENT_BAD, ids=[f"{k}={v!r}" for k, v in AUGMENT_BAD])
def test_augment_bad_value_fails_in_both(name, value):
    with pytest.raises(CnnlabError, match=rf"config: {name}\b"):
        TrainConfig.from_dict({name: value})
    with pytest.raises(CnnlabError, match=rf"augmentation: {name}\b"):
        AugmentConfig(**{name: value})


@pytest.mark.parametrize("name, value", AUGMENT_GOOD, ids=[f"{k}={v!r}" for k, v in AUGMENT_GOOD])
def test_augment_good_value_passes_in_both_as_the_same_value(name, value):
    train_value = getattr(TrainConfig.from_dict({name: value}), name)
    augment_value = getattr(AugmentConfig(**{name: value}), name)
    assert train_value == augment_value
    assert type(train_value) is type(augment_value)


# ------------------------------------------------------------------ KEY=VALUE


@pytest.mark.parametrize("text, expected", [
    ("a=3", ("a", 3)),
    ("lr=0.1", ("lr", 0.1)),
    ("betas=[0.9,0.99]", ("betas", [0.9, 0.99])),
    ("widths=[16, 32]", ("widths", [16, 32])),
    ("act=lrelu:7.5", ("act", "lrelu:7.5")),
    ("label_mode=coarse", ("label_mode", "coarse")),
    ("nesterov=false", ("nesterov", False)),
    ("lr_mults={head: 0.1}", ("lr_mults", {"head": 0.1})),
    ("eval-batch-size=64", ("eval_batch_size", 64)),  # dashes in the key: flag spelling
    (" seed =1", ("seed", 1)),
    ("url=http://h/x?a=b", ("url", "http://h/x?a=b")),  # only the first '=' splits
    ("empty=", ("empty", None)),
])
def test_parse_key_value(text, expected):
    assert parse_key_value(text) == expected


@pytest.mark.parametrize("text, message", [
    ("novalue", "expected KEY=VALUE, got 'novalue'"),
    ("=3", "empty key"),
    (" =3", "empty key"),
    ("betas=[0.9,", "cannot parse the value of betas"),
])
def test_parse_key_value_errors(text, message):
    with pytest.raises(CnnlabError, match=message.replace("[", r"\[")):
        parse_key_value(text)


# ------------------------------------------------------------------ YAML and keys


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig.from_dict(dict(data="synthetic", model="resnet20", epochs=2.5, batch_size=32, lr=0.1,
                                     momentum=None, flip=True, model_options={"widths": [8, 16], "act": "prelu"},
                                     opt_options={"betas": [0.9, 0.99]}, sched_options={"gamma": 0.7},
                                     target_acc=99.0, name="run-1", threads=2))
    path = tmp_path / "sub" / "config.yaml"
    cfg.to_yaml(path)
    assert yaml.safe_load(path.read_text()) == cfg.to_dict()  # plain YAML: no python tags
    assert TrainConfig.from_yaml(path) == cfg
    assert list(yaml.safe_load(path.read_text())) == TrainConfig.field_names()  # field order kept


def test_keys_may_use_dashes():
    assert TrainConfig.from_dict({"batch-size": 16, "eval-every": 2}).batch_size == 16


def test_unknown_key_gets_did_you_mean():
    with pytest.raises(CnnlabError, match=r"unknown key lrr \(did you mean lr\?\)"):
        TrainConfig.from_dict({"lrr": 0.1})
    with pytest.raises(CnnlabError, match=r"unknown key batchsize \(did you mean batch_size\?\), zzz$"):
        TrainConfig.from_dict({"batchsize": 1, "zzz": 2})


@pytest.mark.parametrize("content, message", [
    (None, "config file not found"),
    ("lr: [0.1\n", "not valid YAML"),
    ("- lr\n", "expected a mapping of config keys, got list"),
])
def test_bad_config_files(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CnnlabError, match=message):
        TrainConfig.from_yaml(path)


def test_replace_validates_and_leaves_the_original():
    cfg = TrainConfig()
    other = cfg.replace(lr=0.2, model_options={"widths": [8]})
    assert (other.lr, other.model_options, cfg.lr, cfg.model_options) == (0.2, {"widths": [8]}, 0.05, {})
    with pytest.raises(CnnlabError, match="lr must be > 0"):
        cfg.replace(lr=0)


def test_model_kwargs_and_target_fraction():
    cfg = TrainConfig(model_options={"width": 2}, act="prelu", dropout=0.1)
    assert cfg.model_kwargs() == {"width": 2, "act": "prelu", "dropout": 0.1}
    assert TrainConfig(target_acc=99).target_fraction() == 0.99
    assert TrainConfig(target_acc=0.9).target_fraction() == 0.9
    assert TrainConfig().target_fraction() is None


@pytest.mark.parametrize("value", [float("inf"), float("nan"), "inf", "-inf"])
def test_non_finite_numbers_are_refused_for_every_float_field(value):
    for name, f in FIELDS.items():
        if str(f.type).replace(" | None", "") == "float":
            with pytest.raises(CnnlabError, match=name):
                TrainConfig.from_dict({name: value})
