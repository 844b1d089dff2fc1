"""Memory attention: the first layer's self-attention computed once for several objects."""

import pytest
import torch

from sam2_fast.build_sam import build_sam2_random
from sam2_fast.errors import InvalidInputError


@pytest.fixture(scope="module")
def memory_attention():
    torch.manual_seed(0)
    return build_sam2_random("sam2.1-hiera-tiny", device="cpu").memory_attention.eval()


def _inputs(b: int):
    torch.manual_seed(1)
    curr, curr_pos = torch.randn(4096, 1, 256), torch.randn(4096, 1, 256)
    memory, memory_pos = torch.randn(4096 + 4, b, 64), torch.randn(4096 + 4, b, 64)
    return curr, curr_pos, memory, memory_pos


@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_shared_first_self_attention_gives_the_same_output(memory_attention, b, dtype):
    curr, curr_pos, memory, memory_pos = _inputs(b)
    ma = memory_attention
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        args = dict(curr=[curr.expand(-1, b, -1)], curr_pos=[curr_pos.expand(-1, b, -1)],
                    memory=memory, memory_pos=memory_pos, num_obj_ptr_tokens=4)
        expected = ma(**args)
        first = ma.first_self_attention([curr], [curr_pos])
        assert first.shape == (1, 4096, 256)
        got = ma(**args, first_self_attention=first)
    assert got.shape == expected.shape == (4096, b, 256) and got.dtype == expected.dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), expected.float(), rtol=tol, atol=tol)
    # each item attends to its own memory: the outputs differ between items
    if b > 1:
        assert not torch.allclose(got[:, 0], got[:, 1])


def test_a_shared_first_self_attention_of_another_shape_is_refused(memory_attention):
    curr, curr_pos, memory, memory_pos = _inputs(2)
    with torch.inference_mode():
        with pytest.raises(InvalidInputError, match="first_self_attention"):
            memory_attention([curr.expand(-1, 2, -1)], memory, [curr_pos.expand(-1, 2, -1)], memory_pos,
                             num_obj_ptr_tokens=4, first_self_attention=torch.zeros(2, 4096, 256))
        with pytest.raises(InvalidInputError, match="one item"):
            memory_attention.first_self_attention([curr.expand(-1, 2, -1)], [curr_pos.expand(-1, 2, -1)])
