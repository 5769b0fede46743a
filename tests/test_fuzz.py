"""Property-based fuzzing of every parser a user's input reaches (hypothesis).

The contract (docs/design.md, "errors"): any input either parses or raises one CnnlabError
naming what was wrong; never another exception, never a hang. Each parser gets a few hundred
generated inputs: wrong types, huge and non-finite numbers, random and truncated bytes.
"""
import gzip
import json
import struct

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cnnlab import runs  # noqa: E402
from cnnlab.config import FIELDS, TrainConfig, parse_key_value  # noqa: E402
from cnnlab.errors import CnnlabError  # noqa: E402

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
config_keys = st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=10))


@FUZZ
@given(st.dictionaries(config_keys, values, max_size=6))
def test_config_parses_or_names_the_field(data):
    try:
        cfg = TrainConfig.from_dict(data, "fuzz.yaml")
    except CnnlabError as e:
        assert str(e).startswith("fuzz.yaml")
        return
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # what parsed round-trips


@FUZZ
@given(st.text(max_size=30))
def test_key_value_parses_or_says_what_was_expected(text):
    try:
        key, _ = parse_key_value(text)
    except CnnlabError as e:
        assert "KEY=VALUE" in str(e) or "cannot parse" in str(e)
        return
    assert key and "=" not in key


@FUZZ
@given(st.dictionaries(st.sampled_from(["name", "base", "grid", "variants", "seeds", "budgets", "report", "combine",
                                        "paper", "figures", "claims", "notes", "description", "bogus"]),
                       values, max_size=6))
def test_study_spec_parses_or_names_the_key(data):
    from cnnlab import study

    try:
        study.parse_spec(data, "fuzz-spec.yaml")
    except CnnlabError as e:
        assert "fuzz-spec.yaml" in str(e)


@FUZZ
@given(st.binary(max_size=64), st.sampled_from([1, 3]), st.booleans())
def test_idx_reader_refuses_random_bytes_cleanly(tmp_path, payload, ndim, gz):
    from cnnlab.data.idx import read_idx

    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(payload) if gz else payload)
    try:
        read_idx(path, ndim)
    except CnnlabError as e:
        assert str(path) in str(e)


@FUZZ
@given(st.lists(st.integers(min_value=0, max_value=2**32 - 1), min_size=3, max_size=3), st.binary(max_size=32))
def test_idx_header_with_huge_dimensions_is_refused_without_allocating(tmp_path, dims, payload):
    from cnnlab.data.idx import read_idx

    path = tmp_path / "huge"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", *dims) + payload)
    try:
        out = read_idx(path, 3)
    except CnnlabError as e:
        assert "truncated or corrupt" in str(e)
        return
    assert out.size == len(payload)


@FUZZ
@given(st.binary(max_size=200))
def test_cifar_pickle_reader_refuses_random_bytes_cleanly(tmp_path, payload):
    from cnnlab.data.cifar import read_pickle

    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    try:
        read_pickle(path)
    except CnnlabError as e:
        assert str(path) in str(e)


@FUZZ
@given(st.binary(max_size=200))
def test_image_reader_refuses_random_bytes_cleanly(tmp_path, payload):
    from cnnlab.data.folder import load_image

    path = tmp_path / "x.png"
    path.write_bytes(payload)
    try:
        load_image(path, 8, 1)
    except CnnlabError as e:
        assert "x.png" in str(e)


@FUZZ
@given(st.binary(max_size=300))
def test_checkpoint_reader_names_a_damaged_file(tmp_path, payload):
    from cnnlab.checkpoint import load_checkpoint

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(payload)
    with pytest.raises(CnnlabError, match="checkpoint.pt"):
        load_checkpoint(path)


@FUZZ
@given(st.lists(st.one_of(values.map(json.dumps), st.text(max_size=20)), max_size=5))
def test_metrics_reader_keeps_only_well_formed_rows(tmp_path, lines):
    (tmp_path / runs.METRICS).write_text("\n".join(lines))
    rows = runs.read_metrics(tmp_path)
    assert all(isinstance(r, dict) and "epoch" in r for r in rows)


@FUZZ
@given(st.binary(max_size=100))
def test_json_reader_names_the_file(tmp_path, payload):
    path = tmp_path / "summary.json"
    path.write_bytes(payload)
    try:
        runs.read_json(path)
    except CnnlabError as e:
        assert "summary.json" in str(e)


meta_keys = st.sampled_from(["model", "model_options", "classes", "in_channels", "image_size", "length", "mean", "std"])


@FUZZ
@given(st.dictionaries(meta_keys, values, max_size=8))
def test_meta_reader_names_the_file_and_field(tmp_path, meta):
    (tmp_path / runs.META).write_text(json.dumps(meta))
    try:
        checked = runs.read_meta(tmp_path)
    except CnnlabError as e:
        assert str(e).startswith(str(tmp_path / runs.META))
        return
    assert all(isinstance(c, str) for c in checked["classes"])


@FUZZ
@given(st.text(max_size=30))
def test_spec_figure_paths_stay_in_the_spec_folder(tmp_path, name):
    from cnnlab.study.spec import StudySpec, spec_image

    spec = StudySpec.__new__(StudySpec)
    spec.path = tmp_path / "spec" / "s.yaml"
    try:
        path = spec_image(spec, name, "figures[0].image")
    except CnnlabError as e:
        assert "figures[0].image" in str(e)
        return
    assert path.resolve().is_relative_to((tmp_path / "spec").resolve())
