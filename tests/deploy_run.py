"""One tiny trained run (and its ONNX export) shared by tests/test_export.py and tests/test_serve.py,
made once per pytest process: training and the first export each cost seconds on 2 shared cores."""
import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=None)
def trained_run() -> Path:
    """A fastnet (1,888 parameters) trained for 2 epochs on the synthetic data (4 classes, 1x16x16)."""
    from cnnlab import TrainConfig, train

    out = Path(tempfile.mkdtemp(prefix="cnnlab-deploy-test-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    train(TrainConfig.from_dict(dict(data="synthetic", model="fastnet", model_options={"widths": [8, 8, 16]},
                                     epochs=2, batch_size=64, lr=0.05, out=str(out), name="tiny", progress=False,
                                     threads=1, precision="fp32")))
    return out / "tiny"


@functools.lru_cache(maxsize=None)
def exported_onnx() -> tuple[Path, dict]:
    """``cnnlab export RUN`` of :func:`trained_run`: (RUN/model.onnx, its export record)."""
    from cnnlab.export import export_run

    run_dir = trained_run()
    record = export_run(run_dir, "onnx", quiet=True)
    return run_dir / "model.onnx", record
