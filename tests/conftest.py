import os

import pytest
import torch

# Tests share 2 cores with whatever else runs; one torch thread keeps them predictable.
torch.set_num_threads(1)
os.environ.setdefault("CNNLAB_DATA", os.path.join(os.path.dirname(__file__), ".cache-never-used"))


@pytest.fixture
def tiny_config(tmp_path):
    """A TrainConfig for a seconds-long run on the synthetic dataset."""
    from cnnlab.config import TrainConfig

    def make(**changes):
        base = dict(data="synthetic", model="fastnet", model_options={"widths": [8, 8, 16]}, epochs=3,
                    batch_size=64, lr=0.05, out=str(tmp_path / "runs"), name="run", progress=False, threads=1,
                    precision="fp32")
        base.update(changes)
        return TrainConfig.from_dict(base)

    return make
