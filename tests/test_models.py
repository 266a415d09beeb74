"""The models match the founding document's arithmetic, layer by layer."""

import pytest
import torch

from mnistbench.errors import MnistbenchError
from mnistbench.models.describe import count_params, forward_flops, layer_params, train_flops
from mnistbench.models.factory import create_model
from mnistbench.models.names import list_models
from mnistbench.models.zoo import MODELS
from mnistbench.models.facts import BUILTIN_MODELS


def per_layer(name):
    return [(l.layer, l.total) for l in layer_params(create_model(name))]


def test_lenet5_has_the_founding_documents_per_layer_counts():
    assert per_layer("lenet5") == [("conv1", 156), ("conv2", 2416), ("fc1", 30840), ("fc2", 10164), ("fc3", 850)]
    assert count_params(create_model("lenet5")) == 44_426


def test_custom_mlp_is_784_500_150_10():
    assert per_layer("custom-mlp") == [("fc1", 392_500), ("fc2", 75_150), ("fc3", 1_510)]
    assert count_params(create_model("custom-mlp")) == 469_160


def test_matched_mlp_is_within_one_percent_of_lenet5_with_two_hidden_layers():
    layers = layer_params(create_model("mlp-matched"))
    assert len(layers) == 3  # two hidden layers + output
    assert abs(count_params(create_model("mlp-matched")) - 44_426) / 44_426 < 0.01


def test_the_torch_free_facts_list_the_zoos_models_in_its_order():
    # The report orders groups by models/facts.py, which it reads instead of the zoo so as to import no torch.
    assert tuple(MODELS.names()[: len(BUILTIN_MODELS)]) == BUILTIN_MODELS


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_maps_a_batch_of_digits_to_ten_logits(name):
    torch.manual_seed(0)
    out = create_model(name)(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)


def test_flops_are_counted_not_typed_in():
    # An MLP's forward pass is 2 FLOPs per weight of its linear layers.
    assert forward_flops(create_model("custom-mlp")) == 2 * (784 * 500 + 500 * 150 + 150 * 10)
    # LeNet-5: conv1 24*24*6*25, conv2 8*8*16*150, then the FC layers; 2 FLOPs per multiply-add.
    macs = 24 * 24 * 6 * 25 + 8 * 8 * 16 * 150 + 256 * 120 + 120 * 84 + 84 * 10
    assert forward_flops(create_model("lenet5")) == 2 * macs
    # Backward costs about twice the forward pass.
    m = create_model("lenet5")
    assert 2 * forward_flops(m) < train_flops(m) <= 3 * forward_flops(m)


def test_an_unknown_model_lists_the_known_ones():
    with pytest.raises(MnistbenchError, match="unknown model 'resnet50'.*lenet5, custom-mlp, mlp-matched"):
        create_model("resnet50")


def test_a_model_registered_for_a_block_is_built_there_and_gone_after_it_even_when_the_block_raises():
    before = MODELS.names()
    linear = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))  # noqa: E731
    with pytest.raises(RuntimeError, match="inside the block"):
        with MODELS.registered("block-net", "a test model", linear):
            assert "block-net" in list_models() and create_model("block-net")(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
            raise RuntimeError("inside the block")
    assert MODELS.names() == before
    with pytest.raises(MnistbenchError, match="unknown model 'block-net'"):
        create_model("block-net")


def test_a_model_given_by_reference_is_built_by_the_same_factory(tmp_path):
    (tmp_path / "nets.py").write_text("from torch import nn\n\n\ndef build():\n"
                                      "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    model = create_model("./nets.py:build", tmp_path)
    assert count_params(model) == 7_850 and model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
