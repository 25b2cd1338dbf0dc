"""The LOOK loss and memory against a brute-force reference (explicit loops, explicit leave-one-out)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from pretrain.methods.knn_memory import KNNMemory, key_slots, key_values, ordered_keys
from pretrain.methods.look import LeaveOneOutKNN, look_loss


def brute_force_loss(queries, memory, memory_labels, labels, indices, k, temperature):
    """Per sample: rank every other slot by (similarity desc, slot index asc), keep k, softmax, sum positives."""
    total = 0.0
    for q, y, own in zip(queries.double(), labels.tolist(), indices.tolist(), strict=True):
        candidates = [(float(q @ memory[j].double()), j) for j in range(len(memory)) if j != own]
        candidates.sort(key=lambda c: (-c[0], c[1]))
        top = candidates[: min(k, len(candidates))]
        logits = [s / temperature for s, _ in top]
        top_logit = max(logits)
        weights = [math.exp(v - top_logit) for v in logits]
        p = sum(w for w, (_, j) in zip(weights, top, strict=True) if memory_labels[j] == y) / sum(weights)
        total += -math.log(p) if p > 0 else 0.0
    return total / len(queries)


def loss_from_memory(memory: KNNMemory, queries, labels, indices, k, temperature):
    _, idx = memory.search(queries.detach(), k, exclude=indices)
    loss, _, _ = look_loss(queries, memory.embeddings[idx], memory.labels[idx], labels, temperature)
    return loss


def make_memory(embeddings, labels, chunk_size):
    memory = KNNMemory(labels, embeddings.shape[1], momentum=0.5, chunk_size=chunk_size)
    memory.embeddings = embeddings.clone()
    return memory


@pytest.mark.parametrize("chunk_size", [7, 64, 100_000])
@pytest.mark.parametrize("k", [1, 5, 12])
def test_loss_matches_brute_force_on_random_data(chunk_size, k):
    g = torch.Generator().manual_seed(k * 1000 + chunk_size)
    n, dim, batch = 90, 16, 24
    embeddings = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    labels_all = torch.randint(0, 6, (n,), generator=g)
    indices = torch.randperm(n, generator=g)[:batch]
    queries = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    memory = make_memory(embeddings, labels_all, chunk_size)
    got = loss_from_memory(memory, queries, labels_all[indices], indices, k, 0.1)
    want = brute_force_loss(queries, embeddings, labels_all.tolist(), labels_all[indices], indices, k, 0.1)
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("chunk_size", [3, 5, 1000])
def test_ties_are_broken_by_slot_index_whatever_the_chunking(chunk_size):
    # Integer-valued vectors make every dot product exact, so ties are real ties; with only a few
    # distinct vectors almost every neighbour set is decided by tie-breaking.
    g = torch.Generator().manual_seed(1)
    n, dim, batch, k = 40, 4, 16, 6
    prototypes = torch.randint(-2, 3, (5, dim), generator=g).float()
    embeddings = prototypes[torch.randint(0, 5, (n,), generator=g)]
    labels_all = torch.randint(0, 3, (n,), generator=g)
    indices = torch.arange(batch) * 2
    queries = prototypes[torch.randint(0, 5, (batch,), generator=g)].clone().requires_grad_(True)
    memory = make_memory(embeddings, labels_all, chunk_size)
    got = loss_from_memory(memory, queries, labels_all[indices], indices, k, 0.5)
    want = brute_force_loss(queries.detach(), embeddings, labels_all.tolist(), labels_all[indices], indices, k, 0.5)
    assert got.item() == pytest.approx(want, rel=1e-6, abs=1e-7)


def test_search_returns_exactly_the_reference_neighbours_with_ties():
    embeddings = torch.tensor([[1.0, 0], [1, 0], [0, 1], [1, 0], [1, 0], [0, 1]])
    memory = make_memory(embeddings, torch.zeros(6, dtype=torch.long), chunk_size=2)
    sims, idx = memory.search(torch.tensor([[1.0, 0]]), k=3, exclude=torch.tensor([1]))
    # slots 0, 3, 4 tie at similarity 1 (slot 1 left out); the lowest indices win.
    assert idx.tolist() == [[0, 3, 4]]
    assert sims.tolist() == [[1.0, 1.0, 1.0]]


def test_classes_smaller_than_k_and_samples_without_positives():
    g = torch.Generator().manual_seed(3)
    n, dim, k = 30, 8, 10
    embeddings = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    # class 0 has 2 members (fewer than k), class 2 has 1 member (never has a positive: it is left out)
    labels_all = torch.tensor([0, 0, 2] + [1] * 27)
    indices = torch.tensor([0, 1, 2, 5, 9])
    queries = F.normalize(torch.randn(len(indices), dim, generator=g), dim=1)
    memory = make_memory(embeddings, labels_all, chunk_size=8)
    _, idx = memory.search(queries, k, exclude=indices)
    loss, p, has_positive = look_loss(queries, memory.embeddings[idx], memory.labels[idx], labels_all[indices], 0.2)
    assert not has_positive[2] and p[2] == 0  # the lone class-2 image has no neighbour of its class
    want = brute_force_loss(queries, embeddings, labels_all.tolist(), labels_all[indices], indices, k, 0.2)
    assert loss.item() == pytest.approx(want, rel=1e-5)


def test_k_at_least_memory_size_uses_every_other_slot():
    g = torch.Generator().manual_seed(4)
    embeddings = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    labels_all = torch.tensor([0, 1, 0, 1, 0, 1])
    indices = torch.tensor([0, 3])
    queries = F.normalize(torch.randn(2, 4, generator=g), dim=1)
    memory = make_memory(embeddings, labels_all, chunk_size=4)
    _, idx = memory.search(queries, 50, exclude=indices)
    assert idx.shape == (2, 5)
    assert 0 not in idx[0].tolist() and 3 not in idx[1].tolist()
    got = loss_from_memory(memory, queries, labels_all[indices], indices, 50, 0.1)
    want = brute_force_loss(queries, embeddings, labels_all.tolist(), labels_all[indices], indices, 50, 0.1)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_gradient_matches_autograd_of_the_reference_formula():
    g = torch.Generator().manual_seed(5)
    n, dim, batch, k, tau = 50, 8, 10, 7, 0.1
    embeddings = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    labels_all = torch.randint(0, 3, (n,), generator=g)
    indices = torch.randperm(n, generator=g)[:batch]
    raw = torch.randn(batch, dim, generator=g, dtype=torch.float64, requires_grad=True)
    memory = make_memory(embeddings, labels_all, chunk_size=9)
    loss = loss_from_memory(memory, F.normalize(raw, dim=1), labels_all[indices], indices, k, tau)
    (grad,) = torch.autograd.grad(loss, raw)

    def reference(raw_queries):  # dense formula: mask everything outside the explicit kNN set
        q = F.normalize(raw_queries, dim=1)
        total = 0
        for i in range(batch):
            sims = embeddings @ q[i]
            order = sorted((j for j in range(n) if j != indices[i]), key=lambda j: (-sims[j].item(), j))[:k]
            logits = sims[order] / tau
            pos = labels_all[order] == labels_all[indices[i]]
            if pos.any():
                total = total - (logits[pos].logsumexp(0) - logits.logsumexp(0))
        return total / batch

    (want,) = torch.autograd.grad(reference(raw), raw)
    torch.testing.assert_close(grad, want)


def test_memory_update_momentum_first_visit_and_normalisation():
    labels = torch.arange(5)
    memory = KNNMemory(labels, dim=3, momentum=0.75, chunk_size=2)
    before = memory.embeddings.clone()
    z1 = torch.tensor([[3.0, 0, 0], [0, 2.0, 0]])
    memory.update(torch.tensor([1, 3]), z1)
    # first visit: the slot takes the (normalised) embedding, not a mix with its random init
    torch.testing.assert_close(memory.embeddings[1], torch.tensor([1.0, 0, 0]))
    torch.testing.assert_close(memory.embeddings[3], torch.tensor([0.0, 1, 0]))
    torch.testing.assert_close(memory.embeddings[[0, 2, 4]], before[[0, 2, 4]])
    assert memory.visited.tolist() == [False, True, False, True, False]
    # second visit: momentum mix, renormalised
    memory.update(torch.tensor([1]), torch.tensor([[0.0, 0, 5.0]]))
    want = F.normalize(torch.tensor([0.75, 0, 0.25]), dim=0)
    torch.testing.assert_close(memory.embeddings[1], want)
    assert memory.embeddings.norm(dim=1).sub(1).abs().max() < 1e-6


def test_memory_state_round_trips_through_the_method_state_dict():
    backbone = torch.nn.Flatten()
    params = LeaveOneOutKNN.Params(k=3, embed_dim=4, hidden_dim=8, chunk_size=4)
    targets = torch.tensor([0, 1, 0, 1, 2, 2])
    a = LeaveOneOutKNN(backbone, 12, targets, params)
    a.memory.update(torch.tensor([2, 4]), torch.randn(2, 4))
    b = LeaveOneOutKNN(backbone, 12, targets, LeaveOneOutKNN.Params(k=3, embed_dim=4, hidden_dim=8, memory_seed=9))
    assert not torch.equal(a.memory.embeddings, b.memory.embeddings)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.memory.embeddings, b.memory.embeddings)
    assert torch.equal(a.memory.visited, b.memory.visited)
    assert a.memory.checksum() == b.memory.checksum()


def test_ordered_keys_sort_by_value_then_slot_and_round_trip():
    values = torch.tensor([0.5, -0.5, 0.5, -0.0, 0.0, float("-inf"), 1e-30, -1e-30, 3.0, -3.0])
    slots = torch.tensor([7, 3, 2, 9, 1, 0, 5, 4, 6, 8])
    keys = ordered_keys(values, slots)
    order = keys.argsort(descending=True).tolist()
    want = sorted(range(len(values)), key=lambda i: (-float(values[i]), int(slots[i])))
    assert order == want
    assert torch.equal(key_slots(keys), slots)
    assert torch.equal(key_values(keys), values + 0.0)


@pytest.mark.parametrize("chunk_size", [7, 150, 1000])
def test_search_on_a_collapsed_memory_takes_the_lowest_slots_in_every_chunking(chunk_size):
    # All embeddings equal (a collapsed network): every similarity ties, only slot order decides.
    memory = make_memory(F.normalize(torch.ones(300, 8), dim=1), torch.zeros(300, dtype=torch.long), chunk_size)
    _, idx = memory.search(memory.embeddings[[0, 3, 299]], 5, exclude=torch.tensor([0, 3, 299]))
    assert idx.tolist() == [[1, 2, 3, 4, 5], [0, 1, 2, 4, 5], [0, 1, 2, 3, 4]]
    # a few distinct values among many ties, across groups of slots and chunks
    values = torch.zeros(300, 8)
    values[:, 0] = torch.tensor([1.0, 2.0, 3.0])[torch.arange(300) % 3]
    memory = make_memory(values, torch.zeros(300, dtype=torch.long), chunk_size)
    sims, idx = memory.search(torch.tensor([[1.0] + [0.0] * 7]), 70, exclude=torch.tensor([2]))
    assert idx[0].tolist() == list(range(5, 300, 3))[:70] and bool((sims == 3).all())


@pytest.mark.parametrize("chunk_size", [7, 1000])
def test_bfloat16_search_is_the_exact_top_k_of_the_rounded_vectors(chunk_size):
    g = torch.Generator().manual_seed(chunk_size)
    n, dim, batch, k = 200, 16, 12, 9
    embeddings = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    queries = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    exclude = torch.randperm(n, generator=g)[:batch]
    memory = KNNMemory(torch.zeros(n, dtype=torch.long), dim, 0.5, chunk_size, search_dtype=torch.bfloat16)
    memory.embeddings = embeddings.clone()
    sims, idx = memory.search(queries, k, exclude)
    rounded = queries.bfloat16().float() @ embeddings.bfloat16().float().T
    rounded[torch.arange(batch), exclude] = float("-inf")
    keys = ordered_keys(rounded, torch.arange(n).expand(batch, n)).topk(k, dim=1).values
    assert torch.equal(idx, key_slots(keys))
    torch.testing.assert_close(sims, key_values(keys), rtol=1e-6, atol=1e-7)  # summed in another order
    float32_sims, _ = make_memory(embeddings, memory.labels, chunk_size).search(queries, k, exclude)
    assert not torch.equal(sims, float32_sims)  # the rounding is real


def test_bfloat16_search_ties_what_bfloat16_cannot_tell_apart():
    # 0.99995 and 1.0 are one bfloat16 value: slot 0 ties with slot 1 and wins by its lower index.
    embeddings = torch.stack([F.normalize(torch.tensor([1.0, 0.01]), dim=0), torch.tensor([1.0, 0.0])])
    query, exclude = torch.tensor([[1.0, 0.0]]), torch.tensor([5])
    memory = KNNMemory(torch.zeros(6, dtype=torch.long), 2, 0.5, 4)
    memory.embeddings = torch.cat([embeddings, -torch.ones(4, 2)])
    assert memory.search(query, 1, exclude)[1].tolist() == [[1]]
    memory = KNNMemory(torch.zeros(6, dtype=torch.long), 2, 0.5, 4, search_dtype=torch.bfloat16)
    memory.embeddings = torch.cat([embeddings, -torch.ones(4, 2)])
    assert memory.search(query, 1, exclude)[1].tolist() == [[0]]


def test_bfloat16_searched_copy_follows_updates_and_a_loaded_state():
    params = LeaveOneOutKNN.Params(k=3, embed_dim=4, hidden_dim=8, chunk_size=4, search_dtype="bfloat16")
    targets = torch.tensor([0, 1, 0, 1, 2, 2])
    a = LeaveOneOutKNN(torch.nn.Flatten(), 12, targets, params)
    a.memory.update(torch.tensor([2, 4]), torch.randn(2, 4))
    a.memory.update(torch.tensor([4, 5]), torch.randn(2, 4))
    assert torch.equal(a.memory._searched, a.memory.embeddings.bfloat16())
    b = LeaveOneOutKNN(torch.nn.Flatten(), 12, targets, dataclasses.replace(params, memory_seed=3))
    b.load_state_dict(a.state_dict())
    assert b.memory.embeddings.dtype == torch.float32
    assert torch.equal(b.memory._searched, a.memory._searched)
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        KNNMemory(targets, 4, 0.5, search_dtype=torch.float16)


@pytest.mark.parametrize("search_dtype", ["float32", "bfloat16"])
def test_look_training_step_never_waits_for_the_host(monkeypatch, search_dtype):
    # Every way a tensor reaches Python waits for the device on a GPU; the step must use none of them.
    def host_sync(*args, **kwargs):
        raise AssertionError("host sync in the LOOK step")

    params = LeaveOneOutKNN.Params(k=3, embed_dim=4, hidden_dim=8, chunk_size=5, search_dtype=search_dtype)
    targets = torch.arange(23) % 3
    method = LeaveOneOutKNN(torch.nn.Flatten(), 6, targets, params)
    images, labels, indices = torch.randn(8, 6), targets[:8], torch.arange(8)
    for name in ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, host_sync)
    monkeypatch.setattr(torch, "nonzero", host_sync)
    loss, metrics = method.loss(method(images), labels, indices)
    loss.backward()
    monkeypatch.undo()
    assert torch.isfinite(loss) and int(method.memory.visited.sum()) == 8


@pytest.mark.parametrize(("search_dtype", "compile_mode"), [("float32", "default"), ("bfloat16", "reduce-overhead")])
def test_a_compiled_look_step_trains_as_the_eager_one(search_dtype, compile_mode):
    """method.compile: the search and the loss through torch.compile (inductor's C++ code on this CPU) give,
    step after step, the eager method's neighbours, loss, gradients and memory (up to float rounding), in one
    graph (no graph break: a break would leave launches behind on a GPU). compile_mode reduce-overhead (CUDA
    graphs on a GPU) runs its own step bookkeeping here, without graphs."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    targets = torch.arange(240) % 6
    methods, optimizers = [], []
    for compiled in (False, True):
        torch.manual_seed(0)
        params = LeaveOneOutKNN.Params(k=7, embed_dim=16, hidden_dim=32, chunk_size=100, search_dtype=search_dtype,
                                       compile=compiled, compile_mode=compile_mode)
        method = LeaveOneOutKNN(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 24)), 24, targets, params)
        methods.append(method)
        optimizers.append(torch.optim.SGD(method.parameters(), lr=0.5))
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        images, indices = torch.randn(32, 3, 2, 2, generator=g), torch.randperm(240, generator=g)[:32]
        steps = []
        for method, optimizer in zip(methods, optimizers, strict=True):
            loss, metrics = method.loss(method(images), targets[indices], indices)
            optimizer.zero_grad()
            loss.backward()
            steps.append((loss.detach(), metrics, {n: p.grad.clone() for n, p in method.named_parameters()}))
            optimizer.step()
        (eager_loss, eager_metrics, eager_grads), (loss, metrics, grads) = steps
        torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(metrics, eager_metrics, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads, eager_grads, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(methods[1].memory.embeddings, methods[0].memory.embeddings, rtol=1e-5, atol=1e-6)
    assert eager_metrics["p_mean"] > 0  # neighbours of the same label were found: the comparison means something
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"], dict(counters["graph_break"])


@pytest.mark.parametrize("search_dtype", ["float32", "bfloat16"])
def test_look_training_step_writes_no_python_scalar_through_an_index(search_dtype):
    """`tensor[indices] = True` on a GPU tensor makes the True a host tensor and copies it over inside
    index_put_, which waits for the GPU: on an H200 that one line left the GPU idle ~4 ms of LOOK's step
    (`make gpu-check`'s profile rows). So no index_put_ in the step may write a single scalar value."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class ScalarIndexPuts(TorchDispatchMode):
        found: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default) and args[2].dim() == 0:
                self.found.append(func)
            return func(*args, **(kwargs or {}))

    params = LeaveOneOutKNN.Params(k=3, embed_dim=4, hidden_dim=8, chunk_size=5, search_dtype=search_dtype)
    targets = torch.arange(23) % 3
    method = LeaveOneOutKNN(torch.nn.Flatten(), 6, targets, params)
    images, labels, indices = torch.randn(8, 6), targets[:8], torch.arange(8)
    with ScalarIndexPuts() as mode:
        loss, _ = method.loss(method(images), labels, indices)
        loss.backward()
    assert not mode.found, mode.found
    assert method.memory.visited[:8].all() and not method.memory.visited[8:].any()  # the writes still happen
