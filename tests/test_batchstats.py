"""affssl.batchstats: BatchNorm on batch statistics with nothing updated, against a copy in train mode."""

import copy

import torch
from torch import nn

from affssl.batchstats import batch_statistics


def net() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(6),
                          nn.BatchNorm1d(6), nn.Dropout(0.5))  # fmt: skip
    model(torch.zeros(2, 3, 8, 8))  # materialise the lazy layer
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def test_inside_the_context_batchnorm_is_train_modes_and_no_buffer_moves_and_other_layers_keep_their_mode():
    model, x = net(), torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    reference = copy.deepcopy(model).train()
    reference[6].eval()  # dropout as the model has it: eval mode
    with torch.no_grad():
        expected, eval_mode = reference(x), model(x)
        with batch_statistics(model):
            with batch_statistics(model[4:]):  # nested: the inner one leaves the outer's swap in place
                inner = model(x)
            got = model(x)
        after = model(x)
    assert torch.equal(got, expected) and torch.equal(inner, expected)
    assert torch.equal(after, eval_mode) and not torch.allclose(got, eval_mode)  # restored; the two differ
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())  # num_batches_tracked too
    assert not model.training and not any("forward" in m.__dict__ for m in model.modules())
