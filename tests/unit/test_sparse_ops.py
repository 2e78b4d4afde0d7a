"""The sparse kernels must give exactly the dense gradients."""

import torch

from lm_saes.saes.sparse_ops import SparseCode, select_pre_acts, sparse_decode


def _dense_reference(x, w_enc, b_enc, w_dec, k):
    pre = x @ w_enc.T + b_enc
    values, indices = pre.topk(k, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    return acts @ w_dec


def _sparse(x, w_enc, b_enc, w_dec, k):
    with torch.no_grad():
        pre = x @ w_enc.T + b_enc
    values, indices = pre.topk(k, dim=-1)
    code = SparseCode.from_topk(values, indices)
    selected = select_pre_acts(pre, code, x, w_enc, b_enc).relu()
    return sparse_decode(code._replace(values=selected), w_dec)


def _params(seed=0, batch=64, d_in=24, d_sae=96, d_out=24):
    g = torch.Generator().manual_seed(seed)
    tensors = [
        torch.randn(batch, d_in, generator=g),
        torch.randn(d_sae, d_in, generator=g),
        torch.randn(d_sae, generator=g),
        torch.randn(d_sae, d_out, generator=g),
    ]
    return [t.double().requires_grad_() for t in tensors]


def test_sparse_topk_matches_dense_forward_and_gradients():
    dense_params, sparse_params = _params(), _params()
    target = torch.randn(64, 24, dtype=torch.float64)
    for params, fn in ((dense_params, _dense_reference), (sparse_params, _sparse)):
        out = fn(*params, k=8)
        ((out - target) ** 2).sum().backward()
    out_dense = _dense_reference(*dense_params, k=8)
    out_sparse = _sparse(*sparse_params, k=8)
    torch.testing.assert_close(out_sparse, out_dense)
    for dense, sparse in zip(dense_params, sparse_params, strict=True):
        torch.testing.assert_close(sparse.grad, dense.grad, rtol=1e-10, atol=1e-10)


def test_flat_positions_group_by_row():
    values = torch.tensor([3.0, 1.0, 2.0, 4.0])
    positions = torch.tensor([7, 0, 5, 2])  # rows 1, 0, 1, 0 of a [3, 4] matrix
    code = SparseCode.from_flat_positions(values, positions, batch=3, width=4)
    assert code.rows.tolist() == [0, 0, 1, 1]
    assert code.offsets.tolist() == [0, 2, 4]
    dense = code.to_dense(4)
    expected = torch.zeros(3, 4)
    expected.view(-1)[positions] = values
    torch.testing.assert_close(dense, expected)


def test_decode_with_empty_rows_matches_dense():
    w_dec = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    values = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    code = SparseCode.from_flat_positions(values, torch.tensor([3, 25, 27]), batch=4, width=10)
    out = sparse_decode(code, w_dec)
    reference = code.to_dense(10) @ w_dec
    torch.testing.assert_close(out, reference)
    torch.autograd.gradcheck(
        lambda v, w: sparse_decode(code._replace(values=v), w), (code.values.detach().requires_grad_(), w_dec)
    )
