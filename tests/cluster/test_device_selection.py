"""Device choice on each worker, tested without the hardware: availability is passed in."""

from __future__ import annotations

import pytest

from trainable.model import DeviceError, autocast_dtype, select_device


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(cuda, mps, expected):
    assert select_device("auto", cuda_available=cuda, mps_available=mps) == expected


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
def test_an_available_explicit_device_is_used(device):
    assert select_device(device, cuda_available=True, mps_available=True) == device


def test_cpu_is_always_available():
    assert select_device("cpu", cuda_available=False, mps_available=False) == "cpu"


def test_explicit_mps_without_mps_fails_clearly():
    with pytest.raises(DeviceError) as error:
        select_device("mps", cuda_available=True, mps_available=False)
    message = str(error.value)
    assert "--device mps" in message and "MPS is not available" in message and "Apple silicon" in message


def test_explicit_cuda_without_cuda_fails_clearly():
    """e.g. a trial that asked for no GPU share on a GPU-less node, but a recipe that says cuda."""
    with pytest.raises(DeviceError, match=r"--device cuda: no CUDA device.*CUDA_VISIBLE_DEVICES"):
        select_device("cuda", cuda_available=False, mps_available=True)


def test_unknown_device_is_rejected():
    with pytest.raises(DeviceError, match="expected auto, cpu, cuda or mps"):
        select_device("tpu", cuda_available=False, mps_available=False)


@pytest.mark.parametrize("device", ["mps", "cpu"])
def test_mps_and_cpu_train_in_fp32(device):
    """No autocast off CUDA: MPS half precision is unreliable for training."""
    assert autocast_dtype(device) is None


def test_this_machine_resolves_auto_without_flags():
    """The real probes run too (here: CPU-only torch, so cpu unless a GPU is present)."""
    import torch

    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert select_device("auto") == expected
