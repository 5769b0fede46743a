"""Device, precision and prediction set-up shared by training and inference."""
import pytest
import torch

from cnnlab.device import Runtime, autocast, resolve_precision
from cnnlab.errors import CnnlabError
from cnnlab.predict import predict_probs


def test_precision_auto_is_fp32_or_native_bf16_on_cpu():
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_fp16_on_cpu_fails_for_training_and_falls_back_for_evaluation():
    with pytest.raises(CnnlabError, match="fp16 is not supported on CPU"):
        Runtime.resolve("cpu", "fp16", channels_last=False)
    assert Runtime.resolve("cpu", "fp16", channels_last=False, training=False).precision == "fp32"


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(CnnlabError, match="--device cuda"):
        Runtime.resolve("cuda", "auto", channels_last=False)


def test_fp32_autocast_is_a_no_op():
    with autocast("fp32", torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast("bf16", torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_predict_probs_normalizes_and_averages_flip_views():
    # a model that reads only the left column: flip TTA must average it with the right column
    class LeftColumn(torch.nn.Module):
        def forward(self, x):
            left = x[:, 0, :, 0].mean(1)
            return torch.stack([left, -left], 1)

    images = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
    images[..., 1] = 255  # left column 0 -> -1 after normalization, right column 255 -> +1
    rt = Runtime(torch.device("cpu"))
    p = predict_probs(LeftColumn(), images, (0.5,), (0.5,), rt)
    assert p[0].tolist() == pytest.approx(torch.softmax(torch.tensor([-1.0, 1.0]), 0).tolist())
    p_flip = predict_probs(LeftColumn(), images, (0.5,), (0.5,), rt, tta="flip")
    both = (torch.softmax(torch.tensor([-1.0, 1.0]), 0) + torch.softmax(torch.tensor([1.0, -1.0]), 0)) / 2
    assert p_flip[0].tolist() == pytest.approx(both.tolist())
