"""Folding batch norm into convolutions for inference (cnnlab.models.fuse)."""
import pytest
import torch
import torch.nn as nn

from cnnlab.models import create_model
from cnnlab.models.fuse import fuse_conv_bn


@pytest.mark.parametrize("name,channels,side,options", [
    ("fastnet", 1, 28, {"widths": [8, 12, 16]}),
    ("resnet20", 3, 32, {}),
])
def test_fused_model_computes_the_same_function(name, channels, side, options):
    torch.manual_seed(0)
    model = create_model(name, 10, channels, image_size=side, **options)
    with torch.no_grad():  # running statistics away from their initial 0 / 1, as after training
        model.train()
        for _ in range(3):
            model(torch.randn(16, channels, side, side) * 2 + 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(8, channels, side, side)
    fused = fuse_conv_bn(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is left as it was
    if name == "fastnet":  # every BN follows a convolution in a ConvNormAct
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not fused.training


def test_fusion_leaves_a_batch_norm_without_a_convolution_before_it():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU())
    fused = fuse_conv_bn(model)
    assert isinstance(fused[0], nn.BatchNorm2d) and isinstance(fused[1], nn.Conv2d)
