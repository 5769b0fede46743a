"""`cnnlab features` (sadie Fig. 6): a layer's feature maps for one image, named as `models --info` lists them."""
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.models.info import feature_map_layers, format_report, model_report
from cnnlab.viz import layer_output, plot_feature_maps, tile_maps


@pytest.fixture(scope="module")
def run_and_image(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    code = main(["train", "--data", "synthetic", "--model", "fastnet", "--model-options", "widths=[8,8,16]",
                 "--head", "energy", "--head-options", "hidden=8", "--epochs", "1", "-b", "64", "--threads", "1",
                 "--precision", "fp32", "--out", str(out), "--name", "tiny", "--no-progress"])
    assert code == 0
    image = out / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)).save(image)
    return out / "tiny", image


def test_layer_output_is_the_named_modules_output():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten()).eval()
    x = torch.randn(1, 1, 5, 5)
    torch.testing.assert_close(layer_output(model, x, "1"), torch.relu(model[0](x)))
    with pytest.raises(CnnlabError, match="'2' outputs \\[1, 27\\], not feature maps"):
        layer_output(model, x, "2")


def test_info_lists_the_layers_by_the_names_features_takes():
    model = create_model("resnet20", 10, 3, image_size=16, width=0.25)
    layers = feature_map_layers(model, 3, 16)
    assert layers["stem"] == (4, 16, 16) and layers["blocks.8"] == (16, 4, 4)
    assert list(layers).index("blocks") < list(layers).index("blocks.0")  # in the order layers start
    text = format_report(model_report("resnet20", 3, 16, width=0.25))
    assert "cnnlab features --layer NAME" in text and "blocks.8(16x4x4)" in text
    assert "blocks.0.residual.0" in layers and "blocks.0.residual.0(" not in text  # deeper: accepted, not listed


def test_features_command_draws_a_png(run_and_image, tmp_path, capsys):
    run, image = run_and_image
    out = tmp_path / "maps.png"
    assert main(["features", str(run), str(image), "--layer", "features.2", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(out) in capsys.readouterr().out
    assert main(["features", str(run), str(image), "--layer", "features.0"]) == 0  # default: inside the run folder
    assert (run / "features" / "digit-features.0.png").is_file()


@pytest.mark.parametrize("layer, message", [
    ("feature.2", "no such layer in this model; did you mean features.2"),
    ("head", "'head' outputs \\[1, 4\\], not feature maps"),
])
def test_features_command_errors(run_and_image, capsys, layer, message):
    run, image = run_and_image
    assert main(["features", str(run), str(image), "--layer", layer]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_mosaic_holds_at_most_64_maps_each_scaled_to_its_range(tmp_path):
    maps = torch.randn(100, 6, 5) * torch.arange(1, 101).view(-1, 1, 1)
    maps[3] = 7.0  # a constant map is drawn black, not as NaN
    mosaic = tile_maps(maps)
    assert mosaic.shape == (8 * 7 - 1, 8 * 6 - 1)  # 8 x 8 tiles with 1-pixel gaps
    assert mosaic[:6, :5].min() == 0 and mosaic[:6, :5].max() == 1
    assert (mosaic[:6, 18:23] == 0).all()  # map 3
    path = plot_feature_maps(maps, torch.zeros(3, 12, 12, dtype=torch.uint8), tmp_path / "g.png", "title")
    assert path.read_bytes()[:4] == b"\x89PNG"
